//! The lab's firewalls: the example ruleset (`config/firewall.nft`) with the cluster's chains
//! from `clpcfg nft`, loaded in a firewall's namespace, and a TCP service that tells a client
//! which source address it saw (to check NAT from both ends).

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{Lab, cluster::Cluster, netns::in_netns};

/// Where the example ruleset includes the cluster's chains from.
const FRAGMENT_PATH: &str = "/etc/fwcluster/cluster.nft";

/// The repository's `config/` directory.
pub fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

/// Writes the cluster's chains (`clpcfg nft` of the cluster's configuration) next to it and
/// returns their path.
pub fn fragment(cluster: &Cluster) -> Result<PathBuf> {
    let clpcfg = crate::cluster::binary("clpcfg")?;
    let output = std::process::Command::new(clpcfg)
        .arg("nft")
        .arg(cluster.config_path())
        .output()
        .context("running clpcfg nft")?;
    if !output.status.success() {
        bail!(
            "clpcfg nft failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let path = cluster.dir.path().join("cluster.nft");
    std::fs::write(&path, &output.stdout)?;
    Ok(path)
}

/// `ruleset` (an nft script that includes [`FRAGMENT_PATH`]) with the include pointing at this
/// cluster's chains.
pub fn with_fragment(ruleset: &str, fragment: &Path) -> String {
    ruleset.replace(FRAGMENT_PATH, &fragment.display().to_string())
}

/// Loads the example firewall (`config/firewall.nft` with this cluster's chains) on `host`.
pub fn load_example(lab: &Lab, cluster: &Cluster, host: &str) -> Result<()> {
    let ruleset = std::fs::read_to_string(config_dir().join("firewall.nft"))?;
    let fragment = fragment(cluster)?;
    lab.nft(host, &with_fragment(&ruleset, &fragment))
        .with_context(|| format!("loading the example firewall on {host}"))
}

/// A TCP service in a host's namespace that answers every connection with the source address
/// it saw, then closes it.
pub struct SourceEcho {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl SourceEcho {
    pub fn start(lab: &Lab, host: &str, address: SocketAddrV4) -> Result<Self> {
        let listener = in_netns(lab.ns(host), move || TcpListener::bind(address))?
            .with_context(|| format!("listening on {address} in {host}"))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        let _ = stream.write_all(peer.ip().to_string().as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for SourceEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Connects from `host` to a [`SourceEcho`] at `server` and returns the source address the
/// server saw.
pub fn source_seen(
    lab: &Lab,
    host: &str,
    server: SocketAddrV4,
    timeout: Duration,
) -> Result<Ipv4Addr> {
    let stream = in_netns(lab.ns(host), move || {
        TcpStream::connect_timeout(&server.into(), timeout)
    })?
    .with_context(|| format!("connecting from {host} to {server}"))?;
    stream.set_read_timeout(Some(timeout))?;
    let mut text = String::new();
    (&stream).read_to_string(&mut text)?;
    text.trim()
        .parse()
        .with_context(|| format!("the server at {server} answered {text:?}"))
}

/// [`source_seen`], tried until it works or `timeout` passes (a takeover in progress).
pub fn source_seen_within(
    lab: &Lab,
    host: &str,
    server: SocketAddrV4,
    timeout: Duration,
) -> Result<Ipv4Addr> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match source_seen(lab, host, server, Duration::from_millis(500)) {
            Ok(seen) => return Ok(seen),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
