//! `cargo xtask bench sessions`, part 2: connections through a change of the active firewall,
//! side by side on the same lab and ruleset (the example firewall, forward default drop, the
//! intranet hidden behind group0's address, strict TCP tracking):
//!
//! - (a) fwcluster without `[sync]` (the baseline: nothing synchronized);
//! - (b) keepalived 2.2.7 (VRRPv3, advert 10 ms, priorities 254/253) with conntrackd in its
//!   default external-cache mode driven by conntrack-tools' own `primary-backup.sh` from its
//!   `notify_master`/`notify_backup` (what users run today);
//! - (c) fwcluster with `[sync]`.
//!
//! Each run opens 1,000 long-lived TCP connections and 100 UDP flows from the intranet to the
//! internet, plus 20 TCP and 10 UDP probe streams on which the server sends every few
//! milliseconds; then one event: node loss (the active firewall loses every link) or a planned
//! move to the standby followed by the move back (failback). After each event the *server*
//! speaks first on every connection and flow, then the client; a connection survives when both
//! arrive. Resets and end-of-stream are counted; the stall is the longest silence of each probe
//! stream across the event.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    path::Path,
    process::{Child, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use fwcluster_lab::{
    Lab,
    cluster::Cluster,
    in_netns,
    seed::{self, FWS1, FWS2, INET_CLIENT, INET_CLIENT_ADDRESS, INTRA_CLIENT1},
};
use serde::Serialize;

use crate::failover::percentile;

const TCP_FLOWS: usize = 1000;
const UDP_FLOWS: usize = 100;
const TCP_PROBES: usize = 20;
const UDP_PROBES: usize = 10;
const TCP_PROBE_PERIOD: Duration = Duration::from_millis(5);
const UDP_PROBE_PERIOD: Duration = Duration::from_millis(2);
/// After an event, before the check: TCP's retransmissions and the claim settle.
const SETTLE: Duration = Duration::from_secs(1);

/// The three ways of running the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Setup {
    NoSync,
    KeepalivedConntrackd,
    Fwcluster,
}

impl Setup {
    pub fn name(self) -> &'static str {
        match self {
            Self::NoSync => "(a) no synchronization (fwcluster without [sync])",
            Self::KeepalivedConntrackd => {
                "(b) keepalived 2.2.7 + conntrackd, conntrack-tools' primary-backup.sh"
            }
            Self::Fwcluster => "(c) fwcluster with [sync]",
        }
    }
}

/// The events of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Event {
    NodeLoss,
    PlannedMove,
    Failback,
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Self::NodeLoss => "node loss",
            Self::PlannedMove => "planned move (clpgrp -m / keepalived stopped)",
            Self::Failback => "move back (clpgrp -m / keepalived restarted, preempting)",
        }
    }
}

/// What one event did to the connections.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub setup: Setup,
    pub event: Event,
    pub tcp_survived: usize,
    pub tcp_total: usize,
    pub udp_survived: usize,
    pub udp_total: usize,
    /// Connections that saw a reset or an end of stream.
    pub resets: usize,
    /// Longest silence per probe stream, in ms (the probe period subtracted).
    pub tcp_stalls_ms: Vec<f64>,
    pub udp_stalls_ms: Vec<f64>,
}

const TIMING: &str =
    "heartbeat_interval = \"10ms\"\nheartbeat_timeout = \"30ms\"\nwait_timeout = \"1s\"\n";

const GROUP0: &str = fwcluster_lab::sessions::GROUP0_HIDE_NAT;

fn cluster_config(sync: bool) -> String {
    format!(
        "{TIMING}{}{GROUP0}{}",
        fwcluster_lab::seed_servers!(),
        if sync {
            "\n[sync]\ninterconnect = 0\nwait = \"2s\"\n"
        } else {
            ""
        }
    )
}

/// The connections and flows of one run, and the probe streams' recorders.
struct Load {
    tcp: Vec<(TcpStream, TcpStream)>,
    udp: Vec<(UdpSocket, UdpSocket, SocketAddr)>,
    stop: Arc<AtomicBool>,
    /// Receive times per probe stream (TCP probes first).
    received: Arc<Mutex<Vec<Vec<Instant>>>>,
    resets: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn tcp_pair(listener: &TcpListener, lab: &Lab, at: SocketAddrV4) -> Result<(TcpStream, TcpStream)> {
    let client = in_netns(lab.ns(INTRA_CLIENT1), move || {
        TcpStream::connect_timeout(&at.into(), Duration::from_secs(2))
    })??;
    let (server, _) = listener.accept()?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    Ok((client, server))
}

fn udp_pair(lab: &Lab, port: u16) -> Result<(UdpSocket, UdpSocket, SocketAddr)> {
    let at = SocketAddrV4::new(INET_CLIENT_ADDRESS, port);
    let server = in_netns(lab.ns(INET_CLIENT), move || UdpSocket::bind(at))??;
    let client = in_netns(lab.ns(INTRA_CLIENT1), move || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        socket.connect(at)?;
        Ok::<_, std::io::Error>(socket)
    })??;
    client.send(b"hello")?;
    server.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buffer = [0u8; 16];
    let (_, seen) = server.recv_from(&mut buffer)?;
    ensure!(
        seen.ip() == std::net::IpAddr::V4(seed::GROUP0_INET_FIP),
        "hidden behind group0's address, not {seen}"
    );
    Ok((client, server, seen))
}

impl Load {
    fn open(lab: &Lab) -> Result<Self> {
        let at = SocketAddrV4::new(INET_CLIENT_ADDRESS, 8200);
        let listener = in_netns(lab.ns(INET_CLIENT), move || TcpListener::bind(at))??;
        let mut tcp = Vec::with_capacity(TCP_FLOWS + TCP_PROBES);
        for _ in 0..TCP_FLOWS + TCP_PROBES {
            tcp.push(tcp_pair(&listener, lab, at)?);
        }
        let mut udp = Vec::with_capacity(UDP_FLOWS + UDP_PROBES);
        for k in 0..UDP_FLOWS + UDP_PROBES {
            udp.push(udp_pair(lab, 9200 + k as u16)?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(vec![Vec::new(); TCP_PROBES + UDP_PROBES]));
        let resets = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        // The probe streams: the server side sends, the client side records arrivals.
        // Non-blocking: a stream whose connection died fills its send buffer within a few
        // writes, and the sender must go on with the others (and stop when told).
        let tcp_servers: Vec<TcpStream> = tcp[TCP_FLOWS..]
            .iter()
            .map(|(_, s)| {
                let s = s.try_clone()?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .collect::<std::io::Result<_>>()?;
        let udp_servers: Vec<(UdpSocket, SocketAddr)> = udp[UDP_FLOWS..]
            .iter()
            .map(|(_, s, to)| Ok((s.try_clone()?, *to)))
            .collect::<std::io::Result<_>>()?;
        {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let start = Instant::now();
                let mut tick = 0u64;
                let mut dead = vec![false; tcp_servers.len()];
                while !stop.load(Ordering::SeqCst) {
                    tick += 1;
                    let due = start + UDP_PROBE_PERIOD * tick as u32;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    for (socket, to) in &udp_servers {
                        let _ = socket.send_to(b"p", to);
                    }
                    let every =
                        (TCP_PROBE_PERIOD.as_micros() / UDP_PROBE_PERIOD.as_micros()) as u64;
                    if tick.is_multiple_of(every.max(1)) {
                        for (k, server) in tcp_servers.iter().enumerate() {
                            if dead[k] {
                                continue;
                            }
                            match (&*server).write(b"p") {
                                Err(e) if e.kind() != ErrorKind::WouldBlock => dead[k] = true,
                                _ => {}
                            }
                        }
                    }
                }
            }));
        }
        for (k, (client, _)) in tcp[TCP_FLOWS..].iter().enumerate() {
            let mut client = client.try_clone()?;
            client.set_read_timeout(Some(Duration::from_millis(50)))?;
            let (stop, received, resets) = (stop.clone(), received.clone(), resets.clone());
            threads.push(std::thread::spawn(move || {
                let mut buffer = [0u8; 256];
                while !stop.load(Ordering::SeqCst) {
                    match client.read(&mut buffer) {
                        Ok(0) => {
                            resets.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        Ok(_) => received.lock().expect("probe times")[k].push(Instant::now()),
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => {
                            resets.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            }));
        }
        for (k, (client, _, _)) in udp[UDP_FLOWS..].iter().enumerate() {
            let client = client.try_clone()?;
            client.set_read_timeout(Some(Duration::from_millis(50)))?;
            let (stop, received) = (stop.clone(), received.clone());
            threads.push(std::thread::spawn(move || {
                let mut buffer = [0u8; 16];
                while !stop.load(Ordering::SeqCst) {
                    if client.recv(&mut buffer).is_ok() {
                        received.lock().expect("probe times")[TCP_PROBES + k].push(Instant::now());
                    }
                }
            }));
        }
        Ok(Self {
            tcp,
            udp,
            stop,
            received,
            resets,
            threads,
        })
    }

    /// The longest silence of each probe stream between `from` and `to`, in ms, the period
    /// subtracted, for the streams that flow again at `to` (a dead stream has no stall, it is
    /// lost): (TCP, UDP).
    fn stalls(&self, from: Instant, to: Instant) -> (Vec<f64>, Vec<f64>) {
        let received = self.received.lock().expect("probe times");
        let stall = |times: &Vec<Instant>, period: Duration| -> Option<f64> {
            let mut last = from;
            let mut longest = Duration::ZERO;
            for t in times.iter().filter(|t| **t > from && **t <= to) {
                longest = longest.max(t.saturating_duration_since(last));
                last = *t;
            }
            let flowing = to.saturating_duration_since(last) < period * 20;
            flowing.then(|| longest.saturating_sub(period).as_secs_f64() * 1e3)
        };
        (
            received[..TCP_PROBES]
                .iter()
                .filter_map(|t| stall(t, TCP_PROBE_PERIOD))
                .collect(),
            received[TCP_PROBES..]
                .iter()
                .filter_map(|t| stall(t, UDP_PROBE_PERIOD))
                .collect(),
        )
    }

    /// The server speaks first on every long-lived connection and flow, then the client:
    /// (TCP survived, UDP survived, resets or ends of stream seen).
    fn check(&self, round: usize) -> Result<(usize, usize, usize)> {
        let message = format!("after event {round:04}");
        let text = message.as_bytes();
        let flows = &self.tcp[..TCP_FLOWS];
        let mut failed = vec![false; flows.len()];
        let mut resets = 0;
        for (sender, receiver) in [(1, 0), (0, 1)] {
            for (k, pair) in flows.iter().enumerate() {
                let (mut s, _) = ends(pair, sender, receiver);
                if !failed[k] && s.write_all(text).is_err() {
                    failed[k] = true;
                    resets += 1;
                }
            }
            let mut got = vec![0usize; flows.len()];
            for pair in flows {
                ends(pair, sender, receiver).1.set_nonblocking(true)?;
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut buffer = [0u8; 64];
            loop {
                let mut pending = 0;
                for (k, pair) in flows.iter().enumerate() {
                    if failed[k] || got[k] >= text.len() {
                        continue;
                    }
                    match { ends(pair, sender, receiver).1 }.read(&mut buffer) {
                        Ok(0) => {
                            failed[k] = true;
                            resets += 1;
                        }
                        Ok(n) => got[k] += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => pending += 1,
                        Err(_) => {
                            failed[k] = true;
                            resets += 1;
                        }
                    }
                }
                if pending == 0 || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            for (k, pair) in flows.iter().enumerate() {
                ends(pair, sender, receiver).1.set_nonblocking(false)?;
                if got[k] < text.len() {
                    failed[k] = true;
                }
            }
        }
        let tcp_survived = failed.iter().filter(|f| !**f).count();
        // UDP: the server first (the NAT binding must exist on the active firewall), then
        // the client; all flows at once, within one deadline.
        let flows = &self.udp[..UDP_FLOWS];
        for (client, server, seen) in flows {
            client.set_nonblocking(true)?;
            server.set_nonblocking(true)?;
            server.send_to(text, seen)?;
        }
        let mut state = vec![0u8; flows.len()]; // 0 waiting for the server's, 1 for the client's, 2 done
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut buffer = [0u8; 64];
        while state.iter().any(|s| *s < 2) && Instant::now() < deadline {
            for (k, (client, server, seen)) in flows.iter().enumerate() {
                match state[k] {
                    0 => {
                        if let Ok(n) = client.recv(&mut buffer)
                            && &buffer[..n] == text
                        {
                            client.send(text)?;
                            state[k] = 1;
                        }
                    }
                    1 => {
                        if let Ok((n, from)) = server.recv_from(&mut buffer)
                            && &buffer[..n] == text
                            && from == *seen
                        {
                            state[k] = 2;
                        }
                    }
                    _ => {}
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        for (client, server, _) in flows {
            client.set_nonblocking(false)?;
            server.set_nonblocking(false)?;
        }
        let udp_survived = state.iter().filter(|s| **s == 2).count();
        Ok((tcp_survived, udp_survived, resets))
    }
}

/// The (sending, receiving) ends of a pair: 0 is the client, 1 the server.
fn ends(pair: &(TcpStream, TcpStream), sender: usize, receiver: usize) -> (&TcpStream, &TcpStream) {
    let pick = |k| if k == 0 { &pair.0 } else { &pair.1 };
    (pick(sender), pick(receiver))
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// keepalived and conntrackd of the anchor, stopped when dropped.
struct Anchor {
    keepalived: Vec<Option<Child>>,
    conntrackd: Vec<Child>,
    dir: std::path::PathBuf,
    /// Owns the directory of the configurations (its ruleset fragment came from it too).
    _files: Option<Cluster>,
}

impl Drop for Anchor {
    fn drop(&mut self) {
        for child in self
            .keepalived
            .iter_mut()
            .flatten()
            .chain(&mut self.conntrackd)
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// conntrack-tools' own script, pointed at this run's conntrackd configuration.
fn primary_backup_script(dir: &Path, host: &str) -> Result<std::path::PathBuf> {
    let original = "/usr/share/doc/conntrackd/examples/sync/primary-backup.sh";
    let text = std::fs::read_to_string(original)
        .with_context(|| format!("{original} (conntrackd's examples: cargo xtask setup)"))?;
    let conf = dir.join(format!("conntrackd-{host}.conf"));
    let lock = dir.join(format!("conntrackd-{host}.lock"));
    let text = text
        .replace(
            "CONNTRACKD_CONFIG=/etc/conntrackd/conntrackd.conf",
            &format!("CONNTRACKD_CONFIG={}", conf.display()),
        )
        .replace(
            "CONNTRACKD_LOCK=/var/lock/conntrack.lock",
            &format!("CONNTRACKD_LOCK={}", lock.display()),
        );
    ensure!(
        text.contains(&conf.display().to_string()),
        "the script's configuration line changed"
    );
    let script = dir.join(format!("primary-backup-{host}.sh"));
    std::fs::write(&script, text)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    Ok(script)
}

fn keepalived_config(host: &str, priority: u32, script: &Path) -> String {
    let script = script.display();
    format!(
        r#"global_defs {{
  router_id {host}
  vrrp_garp_master_delay 0
  vrrp_garp_master_repeat 1
  script_user root
}}
vrrp_sync_group G {{
  group {{
    inet
    intra
  }}
  notify_master "{script} primary"
  notify_backup "{script} backup"
  notify_fault "{script} fault"
}}
vrrp_instance inet {{
  state BACKUP
  interface eth0
  virtual_router_id 51
  version 3
  priority {priority}
  advert_int 0.01
  virtual_ipaddress {{
    192.0.2.10/24
  }}
}}
vrrp_instance intra {{
  state BACKUP
  interface eth2
  virtual_router_id 52
  version 3
  priority {priority}
  advert_int 0.01
  virtual_ipaddress {{
    203.0.113.10/24
  }}
}}
"#
    )
}

fn start_keepalived(lab: &Lab, dir: &Path, host: &str, priority: u32) -> Result<Child> {
    let script = dir.join(format!("primary-backup-{host}.sh"));
    let conf = dir.join(format!("keepalived-{host}.conf"));
    std::fs::write(&conf, keepalived_config(host, priority, &script))?;
    lab.command(host, "keepalived")
        .args(["-n", "-l", "-f"])
        .arg(&conf)
        .arg("-p")
        .arg(dir.join(format!("{host}.pid")))
        .arg("-r")
        .arg(dir.join(format!("{host}-vrrp.pid")))
        .arg("-c")
        .arg(dir.join(format!("{host}-check.pid")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting keepalived")
}

fn start_anchor(lab: &Lab, dir: &Path) -> Result<Anchor> {
    let config = cluster_ctl::config::Config::parse(
        Path::new("c.toml"),
        &format!(
            "[cluster]\nname = \"{}\"\n{}",
            lab.prefix(),
            cluster_config(true)
        ),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut conntrackd = Vec::new();
    for (node, host) in [FWS1, FWS2].into_iter().enumerate() {
        let conf = dir.join(format!("conntrackd-{host}.conf"));
        std::fs::write(
            &conf,
            cluster_ctl::sync::conntrackd_conf(
                &config,
                node,
                seed::IC_IF,
                dir,
                cluster_ctl::sync::PeerState::ExternalCache,
            )?,
        )?;
        primary_backup_script(dir, host)?;
        conntrackd.push(
            lab.command(host, "conntrackd")
                .arg("-C")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting conntrackd")?,
        );
        // VRRP through the example firewall's input chain.
        lab.run(
            host,
            "nft",
            &[
                "insert", "rule", "inet", "filter", "input", "ip", "protocol", "vrrp", "accept",
            ],
        )?;
    }
    for host in [FWS1, FWS2] {
        wait_for(
            || Ok(dir.join(format!("conntrackd-{host}.ctl")).exists()),
            "conntrackd",
        )?;
    }
    let mut anchor = Anchor {
        keepalived: vec![None, None],
        conntrackd,
        dir: dir.to_owned(),
        _files: None,
    };
    anchor.keepalived[0] = Some(start_keepalived(lab, dir, FWS1, 254)?);
    wait_address(lab, FWS1)?;
    anchor.keepalived[1] = Some(start_keepalived(lab, dir, FWS2, 253)?);
    // The backup ran its notify_backup (conntrackd -n: resync request).
    std::thread::sleep(Duration::from_millis(500));
    Ok(anchor)
}

/// group0's internet address appears on `host` (keepalived sets it there).
fn wait_address(lab: &Lab, host: &str) -> Result<()> {
    crate::failover::wait_address(lab, host, "192.0.2.10", Duration::from_secs(10))
}

fn wait_for(mut done: impl FnMut() -> Result<bool>, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done()? {
        if Instant::now() > deadline {
            bail!("{what}: not within 10 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// The running pair of one setup.
enum Pair {
    Fwcluster(Cluster),
    Anchor(Anchor),
}

fn start(lab: &Lab, setup: Setup) -> Result<Pair> {
    let sync = setup != Setup::NoSync;
    let mut cluster = Cluster::new(lab, &cluster_config(sync))?;
    for host in [FWS1, FWS2] {
        fwcluster_lab::firewall::load_example(lab, &cluster, host)?;
        lab.run(
            host,
            "sysctl",
            &["-qw", "net.netfilter.nf_conntrack_tcp_loose=0"],
        )?;
    }
    if setup == Setup::KeepalivedConntrackd {
        let dir = cluster.dir.path().join("anchor");
        std::fs::create_dir_all(&dir)?;
        let mut anchor = start_anchor(lab, &dir)?;
        anchor._files = Some(cluster);
        return Ok(Pair::Anchor(anchor));
    }
    cluster.start(lab, FWS1)?;
    cluster.wait_for(
        FWS1,
        "FWC201",
        "group0 is active on fws1",
        Duration::from_secs(10),
    )?;
    cluster.start(lab, FWS2)?;
    cluster.wait_for(FWS2, "FWC101", "fws1 is ONLINE", Duration::from_secs(10))?;
    if sync {
        // fws2 joined beside the running group: it takes part after its sync wait.
        std::thread::sleep(Duration::from_millis(2200));
    }
    Ok(Pair::Fwcluster(cluster))
}

impl Pair {
    /// Makes `event` happen and waits until the other node answers for group0.
    fn event(&mut self, lab: &Lab, event: Event) -> Result<()> {
        let (from, to) = match event {
            Event::NodeLoss | Event::PlannedMove => (FWS1, FWS2),
            Event::Failback => (FWS2, FWS1),
        };
        match self {
            Self::Fwcluster(cluster) => {
                if event == Event::NodeLoss {
                    lab.cut_host(FWS1)?;
                } else {
                    let (ok, out) = cluster.tool(lab, from, "clpgrp", &["-m", "-g", "group0"])?;
                    ensure!(ok, "clpgrp -m on {from}: {out}");
                }
                cluster.wait_holder(to, "group0", to, Duration::from_secs(10))
            }
            Self::Anchor(anchor) => {
                match event {
                    Event::NodeLoss => lab.cut_host(FWS1)?,
                    // A planned move: keepalived stopped on the master (it sends priority 0).
                    Event::PlannedMove => {
                        if let Some(mut child) = anchor.keepalived[0].take() {
                            nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(child.id() as i32),
                                nix::sys::signal::Signal::SIGTERM,
                            )?;
                            child.wait()?;
                        }
                    }
                    // Back: keepalived started again on fws1, which preempts with 254.
                    Event::Failback => {
                        anchor.keepalived[0] = Some(start_keepalived(lab, &anchor.dir, FWS1, 254)?);
                    }
                }
                wait_address(lab, to)
            }
        }
    }
}

/// One run: a node loss, or a planned move followed by the move back.
fn one(setup: Setup, node_loss: bool) -> Result<Vec<Outcome>> {
    let lab = seed::build()?;
    let mut pair = start(&lab, setup)?;
    let load = Load::open(&lab)?;
    // Replication is continuous; the connections were opened a moment ago.
    std::thread::sleep(Duration::from_millis(500));
    let events: &[Event] = if node_loss {
        &[Event::NodeLoss]
    } else {
        &[Event::PlannedMove, Event::Failback]
    };
    let mut outcomes = Vec::new();
    for (round, event) in events.iter().enumerate() {
        let resets_before = load.resets.load(Ordering::SeqCst);
        let from = Instant::now();
        pair.event(&lab, *event)?;
        std::thread::sleep(SETTLE);
        let to = Instant::now();
        let (tcp_stalls_ms, udp_stalls_ms) = load.stalls(from, to);
        let (tcp_survived, udp_survived, check_resets) = load.check(round)?;
        let probe_resets = load.resets.load(Ordering::SeqCst) - resets_before;
        outcomes.push(Outcome {
            setup,
            event: *event,
            tcp_survived,
            tcp_total: TCP_FLOWS,
            udp_survived,
            udp_total: UDP_FLOWS,
            resets: check_resets + probe_resets,
            tcp_stalls_ms,
            udp_stalls_ms,
        });
        // Traffic moves the windows on before the next event.
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(load);
    drop(pair);
    Ok(outcomes)
}

pub fn run(runs: usize, json: Option<&Path>) -> Result<()> {
    println!(
        "\nsession synchronization, connections through a change of the active firewall: \
         {TCP_FLOWS} TCP + {UDP_FLOWS} UDP long-lived NAT'd flows, {TCP_PROBES} TCP probe streams \
         (every {} ms) and {UDP_PROBES} UDP ones (every {} ms); {runs} runs per setup and kind of \
         run, interleaved",
        TCP_PROBE_PERIOD.as_millis(),
        UDP_PROBE_PERIOD.as_millis()
    );
    let setups = [Setup::NoSync, Setup::KeepalivedConntrackd, Setup::Fwcluster];
    let kinds = [true, false];
    let mut all: Vec<Outcome> = Vec::new();
    let combinations: Vec<(Setup, bool)> = setups
        .iter()
        .flat_map(|s| kinds.iter().map(move |k| (*s, *k)))
        .collect();
    for round in 0..runs {
        for k in 0..combinations.len() {
            let (setup, node_loss) = combinations[(round + k) % combinations.len()];
            let outcomes =
                one(setup, node_loss).with_context(|| format!("{}, run {round}", setup.name()))?;
            for o in &outcomes {
                eprintln!(
                    "  {} / {} run {round}: TCP {}/{}, UDP {}/{}, resets {}",
                    setup.name(),
                    o.event.name(),
                    o.tcp_survived,
                    o.tcp_total,
                    o.udp_survived,
                    o.udp_total,
                    o.resets
                );
            }
            all.extend(outcomes);
        }
    }
    println!(
        "\n| setup | event | runs | TCP surviving | UDP surviving | runs with every connection | resets seen | TCP probe stall p95 | UDP probe stall p95 (≈ address outage) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for setup in setups {
        for event in [Event::NodeLoss, Event::PlannedMove, Event::Failback] {
            let rows: Vec<&Outcome> = all
                .iter()
                .filter(|o| o.setup == setup && o.event == event)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let sum = |f: fn(&Outcome) -> usize| rows.iter().map(|o| f(o)).sum::<usize>();
            let whole = rows
                .iter()
                .filter(|o| o.tcp_survived == o.tcp_total && o.udp_survived == o.udp_total)
                .count();
            let tcp_stalls: Vec<f64> = rows.iter().flat_map(|o| o.tcp_stalls_ms.clone()).collect();
            let udp_stalls: Vec<f64> = rows.iter().flat_map(|o| o.udp_stalls_ms.clone()).collect();
            let p95 = |stalls: &[f64]| {
                if stalls.is_empty() {
                    "none flows again".to_owned()
                } else {
                    format!("{:.0} ms", percentile(stalls, 0.95))
                }
            };
            println!(
                "| {} | {} | {} | {}/{} | {}/{} | {whole}/{} | {} | {} | {} |",
                setup.name(),
                event.name(),
                rows.len(),
                sum(|o| o.tcp_survived),
                sum(|o| o.tcp_total),
                sum(|o| o.udp_survived),
                sum(|o| o.udp_total),
                rows.len(),
                sum(|o| o.resets),
                p95(&tcp_stalls),
                p95(&udp_stalls),
            );
        }
    }
    println!(
        "\n(One lab per run; the connections are opened through fws1, the event follows; \
         \"resets seen\" counts connections that read a reset or an end of stream. The stall is \
         the longest silence of a probe stream across the event, its period subtracted, over the \
         streams that flow again (a dead stream is lost, not stalled): for UDP it is the address \
         outage as a flow sees it, for TCP it adds TCP's own retransmission timing. Each event's \
         check covers every connection, also one that stalled at an earlier event: without \
         synchronization a connection stalled by the planned move works again after the move \
         back, through the node that still has its entry, and counts as surviving that event. Not shown: bulk throughput during the event, and flows of more than one group.)"
    );
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&all)?)?;
    }
    Ok(())
}
