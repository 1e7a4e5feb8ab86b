//! `fwclusterd` command line.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "fwclusterd",
    version,
    about = "fwcluster daemon: heartbeats, failover and the XDP data path"
)]
pub struct Args {
    /// Cluster configuration file (identical on every node).
    #[arg(long, short)]
    pub config: PathBuf,
    /// This node's name (default: $FWCLUSTER_NODE, else the short host name).
    #[arg(long)]
    pub node: Option<String>,
    /// Where bpffs pins go (`<pin-root>/<cluster>/<node>`).
    #[arg(long, default_value = "/sys/fs/bpf")]
    pub pin_root: PathBuf,
    /// Directory of the control socket.
    #[arg(long, default_value = "/run/fwcluster")]
    pub run_dir: PathBuf,
    /// Directory of state that outlives reboots (the node's incarnation, and its peers').
    #[arg(long, default_value = "/var/lib/fwcluster")]
    pub state_dir: PathBuf,
    /// Run the daemon itself (the supervisor starts it this way; not for operators).
    #[arg(long, hide = true)]
    pub worker: bool,
}
