//! The cluster configuration (SPEC §7, R-CFG-1): one TOML file, identical on every node.
//!
//! Loading is two steps: serde deserialization (types, defaults, unknown keys) and [`validate`]
//! (the rules between fields). Every error names the file, the line and the key, e.g.
//! `cluster.toml:12: cluster.heartbeat_timeout: must be greater than heartbeat_interval (1s)`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use cluster_common::flowhash::FLOW_HASH_VERSION;
use cluster_engine::{EngineConfig, GroupSpec, NodeId, StepSpec};
pub use cluster_engine::{Failback, Recover, StartMode};
use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Seed limit of interconnect addresses per server.
pub const MAX_INTERCONNECTS: usize = 16;
/// Addresses the data path holds in total (R-RES-1 asks for at least 65,536).
pub const MAX_TOTAL_ADDRESSES: usize = 65_536;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub cluster: ClusterConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<MailConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    #[serde(default)]
    pub server: Vec<ServerConfig>,
    #[serde(default)]
    pub group: Vec<GroupConfig>,
    #[serde(default)]
    pub flowshare: Vec<FlowShareConfig>,
    /// Session synchronization over a dedicated interconnect (R-SYNC-1); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncConfig>,
}

/// `[sync]`: the interconnect that carries the connection-tracking entries between the nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Index into each server's interconnect list: the dedicated sync network.
    pub interconnect: usize,
    /// How long a starting or rejoining node waits for the peers' table before it takes groups
    /// (R-SYNC-3).
    #[serde(default = "defaults::sync_wait", with = "humantime_serde")]
    pub wait: Duration,
    /// UDP port of the sync traffic (conntrackd's FTFW default).
    #[serde(default = "defaults::sync_port")]
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Cluster name; also the bpffs pin directory.
    pub name: String,
    #[serde(default = "defaults::interval", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    #[serde(default = "defaults::wait", with = "humantime_serde")]
    pub wait_timeout: Duration,
    #[serde(default = "defaults::api_port")]
    pub api_port: u16,
    #[serde(default = "defaults::heartbeat_port")]
    pub heartbeat_port: u16,
    /// Timeout of a peer API request.
    #[serde(default = "defaults::api_timeout", with = "humantime_serde")]
    pub api_timeout: Duration,
    #[serde(default = "defaults::key_file")]
    pub key_file: PathBuf,
    /// What to do when the daemon's own internals fail (R-RECOVER-1).
    #[serde(default)]
    pub recover: ClusterRecover,
    #[serde(default = "defaults::cluster_retry")]
    pub retry: u32,
    /// Ping tie-breakers for partition resolution: when all interconnects are lost, a node that
    /// reaches none of them takes nothing over.
    #[serde(default)]
    pub tiebreakers: Vec<IpAddr>,
    /// XDP attach mode.
    #[serde(default)]
    pub xdp_mode: XdpModeConfig,
    /// SCHED_FIFO priority of the daemon (0, the default: normal scheduling). Real-time
    /// scheduling keeps millisecond heartbeats and lease renewals on time when the firewall's
    /// CPUs are busy; opt in after testing on the target machine.
    #[serde(default = "defaults::realtime_priority")]
    pub realtime_priority: u8,
    /// How long a peer whose daemon restarts in place (an upgrade: `clpcfg restart`) is counted
    /// alive beyond the heartbeat timeout, and how much longer it promises to take nothing by
    /// silence: the restart must come back within it, or the groups move (that much later).
    /// Left out of the normalized form while at its default, so that a version which added it
    /// still has the digest of one that did not.
    #[serde(
        default = "defaults::restart_hold",
        with = "humantime_serde",
        skip_serializing_if = "defaults::is_restart_hold"
    )]
    pub restart_hold: Duration,
}

mod defaults {
    use std::{path::PathBuf, time::Duration};

    pub fn interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn wait() -> Duration {
        Duration::from_secs(10)
    }
    pub fn restart_hold() -> Duration {
        Duration::from_secs(5)
    }
    pub fn is_restart_hold(hold: &Duration) -> bool {
        *hold == restart_hold()
    }
    pub fn api_port() -> u16 {
        28001
    }
    pub fn heartbeat_port() -> u16 {
        28002
    }
    pub fn api_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn key_file() -> PathBuf {
        PathBuf::from("/etc/fwcluster/cluster.key")
    }
    pub fn cluster_retry() -> u32 {
        5
    }
    pub fn arp_count() -> u32 {
        1
    }
    pub fn yes() -> bool {
        true
    }
    pub fn address_retry() -> u32 {
        5
    }
    pub fn ipw_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn ipw_timeout() -> Duration {
        Duration::from_secs(3)
    }
    pub fn ipw_retry() -> u32 {
        2
    }
    pub fn exec_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn buckets() -> u32 {
        1024
    }
    pub fn realtime_priority() -> u8 {
        0
    }
    pub fn sync_wait() -> Duration {
        Duration::from_secs(30)
    }
    pub fn sync_port() -> u16 {
        3780
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterRecover {
    #[default]
    Restart,
    Stop,
    Halt,
    Reboot,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeConfig {
    #[default]
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// `smtp://host[:port]` (STARTTLS when offered) or `smtps://host[:port]`.
    pub smtp: String,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the SMTP password (not the password itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Directory of the on-disk outbox.
    #[serde(default = "default_outbox")]
    pub outbox: PathBuf,
}

fn default_outbox() -> PathBuf {
    PathBuf::from("/var/lib/fwcluster/outbox")
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the Prometheus endpoint, e.g. `127.0.0.1:9428`.
    pub listen: std::net::SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Short host name (not an FQDN).
    pub name: String,
    /// Interconnect addresses with prefix, IPv4 or IPv6; index i of every server is one
    /// interconnect.
    pub interconnect: Vec<IpNet>,
}

fn is_true(value: &bool) -> bool {
    *value
}

fn recover_retry() -> Recover {
    Recover::Retry
}
fn recover_failover() -> Recover {
    Recover::Failover
}
fn recover_stop() -> Recover {
    Recover::Stop
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub name: String,
    /// Failover policy, primary first.
    pub policy: Vec<String>,
    #[serde(default)]
    pub failback: Failback,
    #[serde(default)]
    pub start: StartMode,
    #[serde(default)]
    pub fip: Vec<FipConfig>,
    #[serde(default)]
    pub parp: Vec<ParpConfig>,
    #[serde(default)]
    pub ipw: Vec<IpwConfig>,
    #[serde(default)]
    pub exec: Vec<ExecConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FipConfig {
    /// IPv4 or IPv6 address with the prefix of its subnet.
    pub address: IpNet,
    /// Interface; optional when the address's subnet identifies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(default = "defaults::arp_count")]
    pub arp_count: u32,
    #[serde(default)]
    pub ping_count: u32,
    /// Re-announce with gratuitous ARP this often while active (0: only on activation).
    #[serde(default, with = "humantime_serde")]
    pub arp_refresh: Duration,
    #[serde(default = "recover_retry")]
    pub recover: Recover,
    #[serde(default = "defaults::address_retry")]
    pub retry: u32,
    /// Hide NAT (R-FW-3): sources translated to this address when they leave by its interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hide: Vec<Ipv4Net>,
    /// IPv6: the Router flag of the address's Neighbor Advertisements. On by default, since a
    /// floating address is the gateway of its network; a host that hears an advertisement
    /// without it for its gateway drops the gateway from its default routers (RFC 4861 7.2.5).
    #[serde(default = "defaults::yes", skip_serializing_if = "is_true")]
    pub router: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParpConfig {
    /// IPv4 (answered in ARP) or IPv6 (answered in Neighbor Discovery).
    pub address: IpAddr,
    pub interface: String,
    /// MAC answered with; default: the interface's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    #[serde(default = "defaults::arp_count")]
    pub arp_count: u32,
    #[serde(default = "recover_retry")]
    pub recover: Recover,
    #[serde(default = "defaults::address_retry")]
    pub retry: u32,
    /// Static NAT (R-FW-4): the inner host this public address stands for (destination
    /// translation in, source translation out, on every node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_nat: Option<Ipv4Addr>,
    /// IPv6: the Router flag of the address's Neighbor Advertisements (off: a proxied address
    /// usually stands for a host).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub router: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpwConfig {
    /// One entry: fails only when every target is unreachable (`a | b | c`).
    pub targets: Vec<IpAddr>,
    #[serde(default = "defaults::ipw_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "defaults::ipw_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failed rounds tolerated before the entry is in error.
    #[serde(default = "defaults::ipw_retry")]
    pub retry: u32,
    #[serde(default = "recover_failover")]
    pub recover: Recover,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    pub name: String,
    /// Start command line (run by /bin/sh).
    pub start: String,
    /// Stop command line.
    pub stop: String,
    /// The started process is watched: its death is a resource error (`W:`).
    #[serde(default)]
    pub monitor: bool,
    #[serde(default = "defaults::exec_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub retry: u32,
    #[serde(default = "recover_stop")]
    pub recover: Recover,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HashModeConfig {
    #[default]
    #[serde(rename = "src")]
    Src,
    #[serde(rename = "src-dst")]
    SrcDst,
    #[serde(rename = "5tuple")]
    FiveTuple,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowShareConfig {
    pub name: String,
    /// IPv4 or IPv6, with the prefix of its subnet.
    pub address: IpNet,
    pub interface: String,
    /// The shared multicast MAC.
    pub mac: Mac,
    #[serde(default)]
    pub hash: HashModeConfig,
    #[serde(default = "defaults::buckets")]
    pub buckets: u32,
    /// Deal this instance's flows with the buckets, hash and seed of the instance named here
    /// (the other side of a shared gateway): with a symmetric hash both directions of a flow
    /// pass through one node, so its connection tracking sees the whole conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets_of: Option<String>,
}

/// A MAC address written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl std::str::FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
            }
            *byte = u8::from_str_radix(part, 16)
                .map_err(|_| format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
        }
        Ok(Self(mac))
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A configuration error: file, line, key and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

/// All errors found in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// One step of a key path: `group[0].fip[1].address`.
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A key path, printable and locatable in the source.
#[derive(Clone, Debug, Default)]
struct KeyPath(Vec<Seg>);

impl KeyPath {
    fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_owned()));
        p
    }
    fn index(&self, index: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(index));
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

fn path(root: &str) -> KeyPath {
    KeyPath(vec![Seg::Key(root.to_owned())])
}

/// Finds the line of a key path in the source text (1-based), or of its closest ancestor.
fn locate(source: &str, key_path: &KeyPath) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let table = DeTable::parse(source).ok()?;
    let mut span = None;
    let mut current: Option<&DeValue<'_>> = None;
    let mut root = Some(table.get_ref());
    for seg in &key_path.0 {
        match seg {
            Seg::Key(key) => {
                let table = match (root.take(), current) {
                    (Some(t), _) => t,
                    (None, Some(DeValue::Table(t))) => t,
                    _ => break,
                };
                let Some((k, v)) = table.get_key_value(key.as_str()) else {
                    break;
                };
                span = Some(k.span());
                current = Some(v.get_ref());
            }
            Seg::Index(n) => {
                let Some(DeValue::Array(items)) = current else {
                    break;
                };
                let Some(item) = items.get(*n) else {
                    break;
                };
                span = Some(item.span());
                current = Some(item.get_ref());
            }
        }
    }
    span.map(|s| line_of(source, s.start))
}

fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())].matches('\n').count() + 1
}

struct Problems<'a> {
    file: &'a Path,
    source: &'a str,
    errors: Vec<ConfigError>,
}

impl Problems<'_> {
    fn add(&mut self, key: &KeyPath, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line: locate(self.source, key),
            key: key.to_string(),
            message: message.into(),
        });
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(file: &Path) -> Result<Self, ConfigErrors> {
        let source = std::fs::read_to_string(file).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: file.to_owned(),
                line: None,
                key: String::new(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        Self::parse(file, &source)
    }

    /// Parses and validates configuration text; `file` names it in errors.
    pub fn parse(file: &Path, source: &str) -> Result<Self, ConfigErrors> {
        let config: Config = toml::from_str(source).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: file.to_owned(),
                line: e.span().map(|s| line_of(source, s.start)),
                key: String::new(),
                message: e.message().trim().to_owned(),
            }])
        })?;
        let mut problems = Problems {
            file,
            source,
            errors: Vec::new(),
        };
        validate(&config, &mut problems);
        if problems.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(problems.errors))
        }
    }

    /// The configuration with every default filled in, as TOML.
    pub fn normalized(&self) -> String {
        toml::to_string_pretty(self).expect("the config serializes")
    }

    /// SHA-256 of the normalized configuration without its `[mail]` section, and of the flow
    /// hash's version: equal on nodes whose clusters behave alike. Mail settings are left out
    /// because a reload (SIGHUP) applies them to a running daemon, one node after the other; a
    /// node with the new mail settings must not look like a different cluster to one that has
    /// not reloaded yet. The flow hash's version is in because nodes hashing differently would
    /// split shared traffic wrongly (see `FLOW_HASH_VERSION`).
    pub fn digest(&self) -> [u8; 32] {
        self.digest_with_flow_hash(FLOW_HASH_VERSION)
    }

    fn digest_with_flow_hash(&self, flow_hash_version: u32) -> [u8; 32] {
        let behaviour = Self {
            mail: None,
            ..self.clone()
        };
        let text = format!(
            "{}\n# flow hash version {flow_hash_version}\n",
            behaviour.normalized()
        );
        Sha256::digest(text.as_bytes()).into()
    }

    /// The top-level sections in which `other` differs from this configuration.
    pub fn changed_sections(&self, other: &Self) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.cluster != other.cluster {
            changed.push("cluster");
        }
        if self.mail != other.mail {
            changed.push("mail");
        }
        if self.metrics != other.metrics {
            changed.push("metrics");
        }
        if self.server != other.server {
            changed.push("server");
        }
        if self.group != other.group {
            changed.push("group");
        }
        if self.flowshare != other.flowshare {
            changed.push("flowshare");
        }
        changed
    }

    /// Builds the engine's view of a configuration for node `me`. Flow-share instances follow
    /// the groups as groups with no steps that every node may hold at once; they are not part
    /// of the election and so are not listed here.
    pub fn engine_config(&self, me: NodeId) -> EngineConfig {
        let groups = self
            .group
            .iter()
            .map(|g| {
                let mut steps = Vec::new();
                for (k, fip) in g.fip.iter().enumerate() {
                    steps.push(StepSpec {
                        name: format!("{}-fip{k}", g.name),
                        recover: fip.recover,
                        retry: fip.retry,
                        monitored: false,
                    });
                }
                for (k, parp) in g.parp.iter().enumerate() {
                    steps.push(StepSpec {
                        name: format!("{}-parp{k}", g.name),
                        recover: parp.recover,
                        retry: parp.retry,
                        monitored: false,
                    });
                }
                for (k, exec) in g.exec.iter().enumerate() {
                    steps.push(StepSpec {
                        name: format!("{}-exec{k}", g.name),
                        recover: exec.recover,
                        retry: exec.retry,
                        monitored: exec.monitor,
                    });
                }
                GroupSpec {
                    name: g.name.clone(),
                    policy: g
                        .policy
                        .iter()
                        .filter_map(|n| self.server_index(n))
                        .collect(),
                    failback: g.failback,
                    start: g.start,
                    steps,
                    ipw: g.ipw.iter().map(|i| i.recover).collect(),
                }
            })
            .collect();
        EngineConfig {
            nodes: self.server.iter().map(|s| s.name.clone()).collect(),
            me,
            links: self.server.get(me).map_or(0, |s| s.interconnect.len()),
            interval: self.cluster.heartbeat_interval,
            timeout: self.cluster.heartbeat_timeout,
            wait: self.cluster.wait_timeout,
            tiebreakers: !self.cluster.tiebreakers.is_empty(),
            sync_wait: self.sync.as_ref().map(|s| s.wait),
            flow_share: !self.flowshare.is_empty(),
            restart_hold: self.cluster.restart_hold,
            groups,
        }
    }

    /// Index of a server by name.
    pub fn server_index(&self, name: &str) -> Option<usize> {
        self.server.iter().position(|s| s.name == name)
    }

    /// Resolves this node's name: `--node`, else `FWCLUSTER_NODE`, else the short host name;
    /// it must be one of the servers.
    pub fn resolve_node(&self, flag: Option<&str>) -> Result<(usize, String), NodeError> {
        let name = node_name(flag)?;
        match self.server_index(&name) {
            Some(index) => Ok((index, name)),
            None => Err(NodeError::NotAServer {
                name,
                cluster: self.cluster.name.clone(),
                servers: self
                    .server
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

/// Why this node's name cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot read the host name: {0}")]
    HostName(nix::Error),
    #[error("node {name:?} is not a server of cluster {cluster} (servers: {servers})")]
    NotAServer {
        name: String,
        cluster: String,
        servers: String,
    },
}

/// The node name from `--node`, `FWCLUSTER_NODE` or the short host name (R-CLI-3).
pub fn node_name(flag: Option<&str>) -> Result<String, NodeError> {
    if let Some(name) = flag {
        return Ok(name.to_owned());
    }
    if let Ok(name) = std::env::var("FWCLUSTER_NODE")
        && !name.is_empty()
    {
        return Ok(name);
    }
    let host = nix::unistd::gethostname()
        .map_err(NodeError::HostName)?
        .to_string_lossy()
        .into_owned();
    Ok(host.split('.').next().unwrap_or_default().to_owned())
}

/// What is wrong with a server name, if anything.
pub fn host_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.contains('.') {
        return Some(format!(
            "{name:?} is an FQDN; use the short host name (without the domain)"
        ));
    }
    if name.len() > 63
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        || name.starts_with('-')
    {
        return Some(format!("{name:?} is not a valid host name"));
    }
    None
}

/// What is wrong with a cluster, group or exec name, if anything.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 63 {
        return Some("must be 1 to 63 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Some(format!(
            "{name:?} may only contain letters, digits, '-' and '_'"
        ));
    }
    None
}

fn validate(config: &Config, problems: &mut Problems<'_>) {
    let cluster = &config.cluster;
    let c = path("cluster");
    if let Some(e) = name_problem(&cluster.name) {
        problems.add(&c.key("name"), e);
    }
    if cluster.heartbeat_interval < Duration::from_millis(1) {
        problems.add(&c.key("heartbeat_interval"), "must be at least 1ms");
    }
    if cluster.heartbeat_timeout <= cluster.heartbeat_interval {
        problems.add(
            &c.key("heartbeat_timeout"),
            format!(
                "must be greater than heartbeat_interval ({})",
                humantime::format_duration(cluster.heartbeat_interval)
            ),
        );
    }
    if cluster.wait_timeout <= cluster.heartbeat_timeout {
        problems.add(
            &c.key("wait_timeout"),
            format!(
                "must be greater than heartbeat_timeout ({})",
                humantime::format_duration(cluster.heartbeat_timeout)
            ),
        );
    }
    if cluster.restart_hold < cluster.heartbeat_interval
        || cluster.restart_hold > Duration::from_secs(300)
    {
        problems.add(
            &c.key("restart_hold"),
            format!(
                "must be from heartbeat_interval ({}) to 5m",
                humantime::format_duration(cluster.heartbeat_interval)
            ),
        );
    }
    if cluster.realtime_priority > 99 {
        problems.add(&c.key("realtime_priority"), "must be 0 (off) to 99");
    }
    if cluster.api_port == 0 {
        problems.add(&c.key("api_port"), "must not be 0");
    }
    if cluster.heartbeat_port == 0 {
        problems.add(&c.key("heartbeat_port"), "must not be 0");
    }
    if cluster.api_port == cluster.heartbeat_port {
        problems.add(
            &c.key("heartbeat_port"),
            "must differ from api_port (one is TCP, the other UDP, but keep them apart)",
        );
    }
    for (t, target) in cluster.tiebreakers.iter().enumerate() {
        if let Some(problem) = echo_target_problem(*target) {
            problems.add(&c.key("tiebreakers").index(t), problem);
        }
    }

    // Servers.
    let mut server_names = BTreeSet::new();
    if config.server.is_empty() {
        problems.add(&path("server"), "at least one [[server]] is required");
    }
    let mut addresses: BTreeMap<IpAddr, String> = BTreeMap::new();
    let mut claim = |problems: &mut Problems<'_>, address: IpAddr, key: &KeyPath| {
        if let Some(first) = addresses.get(&address) {
            problems.add(key, format!("address {address} is also used by {first}"));
        } else {
            addresses.insert(address, key.to_string());
        }
    };
    for (i, server) in config.server.iter().enumerate() {
        let s = path("server").index(i);
        if let Some(e) = host_name_problem(&server.name) {
            problems.add(&s.key("name"), e);
        }
        if !server_names.insert(server.name.as_str()) {
            problems.add(
                &s.key("name"),
                format!("server {:?} is defined twice", server.name),
            );
        }
        if server.interconnect.is_empty() {
            problems.add(
                &s.key("interconnect"),
                "at least one interconnect address is required",
            );
        }
        if server.interconnect.len() > MAX_INTERCONNECTS {
            problems.add(
                &s.key("interconnect"),
                format!(
                    "{} interconnect addresses; at most {MAX_INTERCONNECTS} are allowed",
                    server.interconnect.len()
                ),
            );
        }
        for (k, net) in server.interconnect.iter().enumerate() {
            claim(problems, net.addr(), &s.key("interconnect").index(k));
            if let IpNet::V6(net) = net
                && (net.addr().is_unicast_link_local() || net.addr().is_multicast())
            {
                problems.add(
                    &s.key("interconnect").index(k),
                    format!(
                        "{} is not a global or unique-local unicast address: an interconnect \
                         needs one that names a single interface without a scope",
                        net.addr()
                    ),
                );
            }
        }
    }
    // Interconnect i of every server must be in one subnet.
    if let Some(first) = config.server.first() {
        for (i, server) in config.server.iter().enumerate().skip(1) {
            let s = path("server").index(i).key("interconnect");
            if server.interconnect.len() != first.interconnect.len() {
                problems.add(
                    &s,
                    format!(
                        "{} has {} interconnect addresses but {} has {}; interconnect i of every server must be one link",
                        server.name,
                        server.interconnect.len(),
                        first.name,
                        first.interconnect.len()
                    ),
                );
                continue;
            }
            for (k, (a, b)) in first
                .interconnect
                .iter()
                .zip(&server.interconnect)
                .enumerate()
            {
                if a.network() != b.network() || a.prefix_len() != b.prefix_len() {
                    problems.add(
                        &s.index(k),
                        format!(
                            "{b} is not in the subnet {} of {}'s interconnect {k}",
                            a.trunc(),
                            first.name
                        ),
                    );
                }
            }
        }
    }

    // Groups.
    let mut group_names = BTreeSet::new();
    let mut parp_owner: BTreeMap<IpAddr, (String, KeyPath)> = BTreeMap::new();
    // Hide-NAT sources seen so far: (source, group, key).
    let mut hidden: Vec<(Ipv4Net, String, String)> = Vec::new();
    // Static-NAT inner hosts seen so far, with the key that named them.
    let mut static_inner: BTreeMap<Ipv4Addr, KeyPath> = BTreeMap::new();
    let mut total_addresses = 0usize;
    for (g, group) in config.group.iter().enumerate() {
        let gp = path("group").index(g);
        if let Some(e) = name_problem(&group.name) {
            problems.add(&gp.key("name"), e);
        }
        if !group_names.insert(group.name.as_str()) {
            problems.add(
                &gp.key("name"),
                format!("group {:?} is defined twice", group.name),
            );
        }
        if group.policy.is_empty() {
            problems.add(&gp.key("policy"), "the failover policy names no server");
        }
        let mut seen = BTreeSet::new();
        for (p, name) in group.policy.iter().enumerate() {
            if !server_names.contains(name.as_str()) {
                problems.add(
                    &gp.key("policy").index(p),
                    format!("unknown server {name:?} in the failover policy"),
                );
            }
            if !seen.insert(name) {
                problems.add(
                    &gp.key("policy").index(p),
                    format!("server {name:?} appears twice in the failover policy"),
                );
            }
        }
        for (k, fip) in group.fip.iter().enumerate() {
            let key = gp.key("fip").index(k);
            claim(problems, fip.address.addr(), &key.key("address"));
            if fip.address.prefix_len() == fip.address.max_prefix_len()
                || fip.address.prefix_len() == 0
            {
                let example = match fip.address {
                    IpNet::V4(_) => "/24",
                    IpNet::V6(_) => "/64",
                };
                problems.add(
                    &key.key("address"),
                    format!(
                        "{} needs the prefix of its subnet (e.g. {example})",
                        fip.address
                    ),
                );
            }
            if let Some(problem) = ipv6_address_problem(fip.address.addr()) {
                problems.add(&key.key("address"), problem);
            }
            if let IpNet::V6(address) = fip.address
                && address.addr().is_unicast_link_local()
                && fip.ping_count > 0
            {
                problems.add(
                    &key.key("ping_count"),
                    format!(
                        "{} is link-local: it cannot be probed without an interface scope; set 0",
                        address.addr()
                    ),
                );
            }
            if let IpNet::V6(address) = fip.address
                && address.addr().is_unicast_link_local()
                && fip.interface.is_none()
            {
                problems.add(
                    &key.key("address"),
                    format!(
                        "{} is link-local: every interface holds fe80::/64, so name the interface",
                        address.addr()
                    ),
                );
            }
            if fip.address.addr().is_ipv6() && !fip.hide.is_empty() {
                problems.add(
                    &key.key("hide"),
                    format!(
                        "hide NAT translates IPv4 sources and {} is IPv6 (fwcluster offers no NAT66: \
                         route the inner IPv6 prefix instead)",
                        fip.address.addr()
                    ),
                );
            }
            if let Some(interface) = &fip.interface
                && let Some(e) = interface_name_problem(interface)
            {
                problems.add(&key.key("interface"), e);
            }
            if fip.arp_count == 0 {
                problems.add(&key.key("arp_count"), "must be at least 1");
            }
            if !fip.hide.is_empty() && fip.interface.is_none() {
                problems.add(
                    &key.key("hide"),
                    "needs `interface`: hide NAT translates what leaves by the address's interface",
                );
            }
            for (h, source) in fip.hide.iter().enumerate() {
                let hk = key.key("hide").index(h);
                if let IpAddr::V4(address) = fip.address.addr()
                    && source.contains(&address)
                {
                    problems.add(&hk, format!("{source} holds {address} itself"));
                }
                match hidden
                    .iter()
                    .find(|(other, _, _)| other.contains(&source.network()) || source.contains(&other.network()))
                {
                    Some((other, owner, at)) if *owner != group.name => problems.add(
                        &hk,
                        format!(
                            "{source} overlaps {other} ({at}) of group {owner}: a source is hidden behind one group's address"
                        ),
                    ),
                    Some((other, _, at)) => problems.add(
                        &hk,
                        format!("{source} overlaps {other} ({at})"),
                    ),
                    None => hidden.push((*source, group.name.clone(), hk.to_string())),
                }
            }
        }
        for (k, parp) in group.parp.iter().enumerate() {
            let key = gp.key("parp").index(k);
            if let Some((other, _)) = parp_owner.get(&parp.address)
                && other != &group.name
            {
                problems.add(
                    &key.key("address"),
                    format!(
                        "proxy-ARP address {} is also in group {other}; the proxy-ARP sets of groups must not overlap",
                        parp.address
                    ),
                );
            } else {
                claim(problems, parp.address, &key.key("address"));
                parp_owner.insert(parp.address, (group.name.clone(), key.clone()));
            }
            if let Some(e) = interface_name_problem(&parp.interface) {
                problems.add(&key.key("interface"), e);
            }
            if let Some(mac) = parp.mac
                && mac.0[0] & 1 == 1
            {
                problems.add(&key.key("mac"), format!("{mac} is a multicast MAC"));
            }
            if let Some(problem) = ipv6_address_problem(parp.address) {
                problems.add(&key.key("address"), problem);
            }
            if let Some(inner) = parp.static_nat {
                let nk = key.key("static_nat");
                if parp.address.is_ipv6() {
                    problems.add(
                        &nk,
                        format!(
                            "static NAT maps IPv4 addresses and {} is IPv6 (fwcluster offers no NAT66)",
                            parp.address
                        ),
                    );
                } else if IpAddr::V4(inner) == parp.address {
                    problems.add(&nk, format!("{inner} is the proxy-ARP address itself"));
                } else if let Some(at) = static_inner.get(&inner) {
                    problems.add(
                        &nk,
                        format!(
                            "{inner} already stands behind {at}: one public address per inner host"
                        ),
                    );
                } else {
                    static_inner.insert(inner, nk.clone());
                }
            }
        }
        total_addresses += group.fip.len() + group.parp.len();
        for (k, ipw) in group.ipw.iter().enumerate() {
            let key = gp.key("ipw").index(k);
            if ipw.targets.is_empty() {
                problems.add(&key.key("targets"), "names no target");
            }
            for (t, target) in ipw.targets.iter().enumerate() {
                if let Some(problem) = echo_target_problem(*target) {
                    problems.add(&key.key("targets").index(t), problem);
                }
            }
            if ipw.interval.is_zero() {
                problems.add(&key.key("interval"), "must not be 0");
            }
            if ipw.timeout.is_zero() {
                problems.add(&key.key("timeout"), "must not be 0");
            }
        }
        let mut exec_names = BTreeSet::new();
        for (k, exec) in group.exec.iter().enumerate() {
            let key = gp.key("exec").index(k);
            if let Some(e) = name_problem(&exec.name) {
                problems.add(&key.key("name"), e);
            }
            if !exec_names.insert(exec.name.as_str()) {
                problems.add(
                    &key.key("name"),
                    format!("exec {:?} is defined twice", exec.name),
                );
            }
            if exec.start.trim().is_empty() {
                problems.add(&key.key("start"), "must not be empty");
            }
            if exec.stop.trim().is_empty() {
                problems.add(&key.key("stop"), "must not be empty");
            }
            if exec.timeout.is_zero() {
                problems.add(&key.key("timeout"), "must not be 0");
            }
        }
    }

    // Flow share.
    let mut flow_names = BTreeSet::new();
    let mut flow_interfaces = BTreeSet::new();
    if config.flowshare.len() > cluster_common::MAX_FLOWSHARES as usize {
        problems.add(
            &path("flowshare"),
            format!(
                "{} flow-share instances; at most {}",
                config.flowshare.len(),
                cluster_common::MAX_FLOWSHARES
            ),
        );
    }
    for (k, share) in config.flowshare.iter().enumerate() {
        let key = path("flowshare").index(k);
        if let Some(e) = name_problem(&share.name) {
            problems.add(&key.key("name"), e);
        }
        if !flow_names.insert(share.name.as_str()) || group_names.contains(share.name.as_str()) {
            problems.add(
                &key.key("name"),
                format!(
                    "name {:?} is already used by a group or flow share",
                    share.name
                ),
            );
        }
        claim(problems, share.address.addr(), &key.key("address"));
        if let Some(problem) = ipv6_address_problem(share.address.addr()) {
            problems.add(&key.key("address"), problem);
        }
        if let IpNet::V6(address) = share.address
            && address.addr().is_unicast_link_local()
        {
            problems.add(
                &key.key("address"),
                format!(
                    "{} is link-local: a shared address must be routable",
                    address.addr()
                ),
            );
        }
        if let Some(e) = interface_name_problem(&share.interface) {
            problems.add(&key.key("interface"), e);
        }
        if !flow_interfaces.insert(share.interface.as_str()) {
            problems.add(
                &key.key("interface"),
                format!(
                    "interface {} already has a flow share (one per interface)",
                    share.interface
                ),
            );
        }
        if share.mac.0[0] & 1 == 0 {
            problems.add(
                &key.key("mac"),
                format!(
                    "{} is not a multicast MAC (every node must receive the frames)",
                    share.mac
                ),
            );
        }
        if share.buckets == 0 || share.buckets > cluster_common::MAX_BUCKETS {
            problems.add(
                &key.key("buckets"),
                format!("must be 1 to {}", cluster_common::MAX_BUCKETS),
            );
        }
        if let Some(leader) = &share.buckets_of {
            match config.flowshare.iter().find(|f| &f.name == leader) {
                None => problems.add(
                    &key.key("buckets_of"),
                    format!("no flow share named {leader:?}"),
                ),
                Some(l) if l.name == share.name || l.buckets_of.is_some() => problems.add(
                    &key.key("buckets_of"),
                    format!("{leader:?} deals its flows with another instance's buckets itself; name that one"),
                ),
                Some(l) if l.hash != share.hash || l.buckets != share.buckets => problems.add(
                    &key.key("buckets_of"),
                    format!(
                        "{leader:?} hashes with {:?} over {} buckets; this instance must use the same",
                        l.hash, l.buckets
                    ),
                ),
                Some(_) if share.hash == HashModeConfig::Src => problems.add(
                    &key.key("buckets_of"),
                    "\"src\" is not symmetric: the two directions of a flow would land on different nodes; use \"src-dst\" or \"5tuple\"",
                ),
                Some(_) => {}
            }
        }
        total_addresses += 1;
    }
    if total_addresses > MAX_TOTAL_ADDRESSES {
        problems.add(
            &path("group"),
            format!(
                "{total_addresses} floating, proxy-ARP and shared addresses; the data path holds {MAX_TOTAL_ADDRESSES}"
            ),
        );
    }
    if config.group.len() + config.flowshare.len() > cluster_common::MAX_LEASES as usize {
        problems.add(&path("group"), "too many groups and flow shares");
    }
    for (inner, at) in &static_inner {
        if let Some(first) = addresses.get(&IpAddr::V4(*inner)) {
            problems.add(
                at,
                format!("{inner} is a cluster address ({first}), not an inner host"),
            );
        }
    }
    if let Some(sync) = &config.sync {
        let links = config.server.first().map_or(0, |s| s.interconnect.len());
        if sync.interconnect >= links {
            problems.add(
                &path("sync").key("interconnect"),
                format!(
                    "interconnect {} does not exist (each server has {links}, numbered from 0)",
                    sync.interconnect
                ),
            );
        }
        if sync.port == config.cluster.heartbeat_port {
            problems.add(
                &path("sync").key("port"),
                format!("{} is the heartbeat port", sync.port),
            );
        }
    }
}

/// What is wrong with an interface name, if anything.
/// What makes an address unfit for an echo target (IP watch, tie-breakers): one that no echo
/// reaches, or a link-local IPv6 address, which names no interface by itself.
fn echo_target_problem(target: IpAddr) -> Option<String> {
    match target {
        IpAddr::V4(address)
            if address.is_unspecified() || address.is_multicast() || address.is_broadcast() =>
        {
            Some(format!("{address} is not the address of a host"))
        }
        IpAddr::V4(_) => None,
        IpAddr::V6(address) if address.is_unicast_link_local() => Some(format!(
            "{address} is link-local and names no interface: use the host's global or \
             unique-local address"
        )),
        IpAddr::V6(_) => ipv6_address_problem(target),
    }
}

/// What makes an IPv6 address unfit for a cluster address: multicast, unspecified, loopback
/// or IPv4-mapped addresses are never answered in Neighbor Discovery.
fn ipv6_address_problem(address: IpAddr) -> Option<String> {
    let IpAddr::V6(address) = address else {
        return None;
    };
    if address.is_multicast() {
        Some(format!("{address} is a multicast address"))
    } else if address.is_unspecified() || address.is_loopback() {
        Some(format!("{address} is not an address of a network"))
    } else if address.to_ipv4_mapped().is_some() {
        Some(format!(
            "{address} is IPv4-mapped; write the IPv4 address itself"
        ))
    } else {
        None
    }
}

fn interface_name_problem(name: &str) -> Option<String> {
    // IFNAMSIZ is 16 with the NUL.
    if name.is_empty()
        || name.len() > 15
        || name.contains('/')
        || name.contains(char::is_whitespace)
    {
        return Some(format!("{name:?} is not a valid interface name"));
    }
    None
}

/// Checks the addresses of this node against its interfaces (done by the daemon at start and by
/// `clpcfg check --node`): every FIP without an interface must fall in the subnet of exactly one
/// interface, a named interface must exist, and each interconnect address must be configured.
pub fn check_against_interfaces(
    config: &Config,
    node: usize,
    interfaces: &BTreeMap<String, Vec<IpNet>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (g, group) in config.group.iter().enumerate() {
        for (k, fip) in group.fip.iter().enumerate() {
            let key = format!("group[{g}].fip[{k}]");
            match &fip.interface {
                Some(name) => match interfaces.get(name) {
                    None => {
                        problems.push(format!("{key}.interface: no interface {name} on this node"))
                    }
                    Some(nets) => {
                        if !nets.iter().any(|n| n.contains(&fip.address.addr())) {
                            problems.push(format!(
                                "{key}.address: {} is outside every subnet of {name}",
                                fip.address
                            ));
                        }
                    }
                },
                None => {
                    let matching: Vec<&String> = interfaces
                        .iter()
                        .filter(|(_, nets)| nets.iter().any(|n| n.contains(&fip.address.addr())))
                        .map(|(name, _)| name)
                        .collect();
                    match matching.len() {
                        1 => {}
                        0 => problems.push(format!(
                            "{key}.address: {} is outside the subnet of every interface; set interface",
                            fip.address
                        )),
                        _ => problems.push(format!(
                            "{key}.address: {} matches several interfaces; set interface",
                            fip.address
                        )),
                    }
                }
            }
        }
        for (k, parp) in group.parp.iter().enumerate() {
            let key = format!("group[{g}].parp[{k}]");
            match interfaces.get(&parp.interface) {
                None => problems.push(format!(
                    "{key}.interface: no interface {} on this node",
                    parp.interface
                )),
                Some(nets) if !nets.iter().any(|n| n.contains(&parp.address)) => {
                    let request = match parp.address {
                        IpAddr::V4(_) => "ARP request",
                        IpAddr::V6(_) => "Neighbor Solicitation",
                    };
                    problems.push(format!(
                        "{key}.address: {} is outside every subnet of {}: no {request} for it arrives there",
                        parp.address, parp.interface
                    ))
                }
                Some(_) => {}
            }
            if let Some(inner) = parp.static_nat
                && !interfaces
                    .values()
                    .flatten()
                    .any(|n| n.contains(&IpAddr::V4(inner)))
            {
                problems.push(format!(
                    "{key}.static_nat: {inner} is outside the subnet of every interface of this node"
                ));
            }
        }
    }
    if let Some(server) = config.server.get(node) {
        for (k, net) in server.interconnect.iter().enumerate() {
            if !interfaces
                .values()
                .flatten()
                .any(|n| n.addr() == net.addr())
            {
                problems.push(format!(
                    "server[{node}].interconnect[{k}]: {net} is not configured on any interface of this node"
                ));
            }
        }
    }
    for (k, share) in config.flowshare.iter().enumerate() {
        if !interfaces.contains_key(&share.interface) {
            problems.push(format!(
                "flowshare[{k}].interface: no interface {} on this node",
                share.interface
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes whose flow hashes differ (midway through an upgrade) must not look alike.
    #[test]
    fn the_flow_hash_version_is_part_of_the_digest() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/hot-standby.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(
            config.digest(),
            config.digest_with_flow_hash(FLOW_HASH_VERSION)
        );
        assert_ne!(
            config.digest_with_flow_hash(FLOW_HASH_VERSION),
            config.digest_with_flow_hash(FLOW_HASH_VERSION + 1)
        );
    }
}
