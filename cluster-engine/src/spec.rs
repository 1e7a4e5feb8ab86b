//! What the engine is told about the cluster: nodes, links, timings, and per group its failover
//! policy and resource steps. Built from the TOML configuration by `cluster-ctl`'s `config`
//! module; the engine does not know the file's layout.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::NodeId;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Failback {
    Auto,
    #[default]
    Manual,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartMode {
    #[default]
    Auto,
    Manual,
}

/// Recovery action of a resource (R-RES-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recover {
    Ignore,
    Retry,
    Stop,
    Failover,
}

impl Recover {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ignore => "IGNORE",
            Self::Retry => "RETRY",
            Self::Stop => "STOP",
            Self::Failover => "FAILOVER",
        }
    }
}

/// One resource step of a group, in activation order (FIP, then PARP, then EXEC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepSpec {
    pub name: String,
    pub recover: Recover,
    pub retry: u32,
    /// A monitored EXEC: its death is a resource error while the group is online.
    pub monitored: bool,
}

/// The part of the configuration the engine needs for one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSpec {
    pub name: String,
    pub policy: Vec<NodeId>,
    pub failback: Failback,
    pub start: StartMode,
    pub steps: Vec<StepSpec>,
    /// Recovery action of each IPW entry.
    pub ipw: Vec<Recover>,
}

/// The engine's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    pub nodes: Vec<String>,
    pub me: NodeId,
    pub links: usize,
    pub interval: Duration,
    pub timeout: Duration,
    pub wait: Duration,
    pub tiebreakers: bool,
    /// With session synchronization (`[sync] wait`): how long a starting node that finds a
    /// peer running groups waits for the peers' connection entries before it takes part
    /// (R-SYNC-3). `None`: no synchronization.
    pub sync_wait: Option<Duration>,
    /// The cluster shares flows (flow-share instances): every ready node passes some of them,
    /// so with synchronization a starting node waits for its peers' entries also when they run
    /// no group (R-SYNC-4).
    pub flow_share: bool,
    /// The longest restart hold this node asks for and grants (`[cluster] restart_hold`): how
    /// much longer than the timeout a peer that announced a restart of its daemon is counted
    /// alive, and how much longer it promises to take nothing by silence.
    pub restart_hold: Duration,
    pub groups: Vec<GroupSpec>,
}

impl EngineConfig {
    /// How long after sending an acknowledged heartbeat a holder may answer.
    ///
    /// A peer that received that heartbeat takes over by silence no earlier than one timeout
    /// after receiving it, on its own clock, so the lease is the timeout less a margin: 2 % of
    /// the timeout, at least 1 ms (but at most a quarter of the timeout). It covers monotonic
    /// clocks whose rates differ by up to 1 % (NTP slews at most 0.05 %); the XDP program
    /// compares the lease's end with its clock on every frame. Timer slack and scheduling in the
    /// daemons only make a takeover later and need no margin.
    pub fn lease(&self) -> Duration {
        self.lease_with_hold(Duration::ZERO)
    }

    /// The lease after a heartbeat whose receiver also promised a restart hold of `hold` (see
    /// [`EngineConfig::restart_hold`]): the promise spans the timeout and the hold, and so does
    /// the margin for the clocks' rates.
    pub fn lease_with_hold(&self, hold: Duration) -> Duration {
        let span = self.timeout + hold;
        span.saturating_sub(Self::margin(span))
    }

    /// See [`EngineConfig::lease`].
    pub fn lease_margin(&self) -> Duration {
        Self::margin(self.timeout)
    }

    fn margin(span: Duration) -> Duration {
        (span / 50).max(Duration::from_millis(1)).min(span / 4)
    }

    /// How long a node that has heard no peer waits before it takes groups alone: the startup
    /// wait, but at least two timeouts. A running holder that hears this node only from its
    /// first heartbeat on keeps a lease from before for at most one more lease, so a starting
    /// node that cannot hear the holder must not take over sooner.
    pub fn alone_wait(&self) -> Duration {
        self.wait.max(2 * self.timeout)
    }
}
