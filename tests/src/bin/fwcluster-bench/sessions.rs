//! `cargo xtask bench sessions`: session synchronization on the seed network.
//!
//! Part 1, replication (conntrackd as fwcluster configures it, in both of its ways of holding the
//! peer's entries): fill the active node's table with N NAT'd UDP flows (10k, 100k), wait until
//! the peer holds them all, then create probe flows at a steady rate and measure each one's lag
//! (created on the active node → present on the peer); then what a takeover must wait for
//! (external cache: `conntrackd -c`; kernel table: nothing) and conntrackd's memory.
//!
//! Part 2, connections through a change of the active firewall: see [`survival`].

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use cluster_ctl::{
    config::Config,
    sync::{PeerState, conntrackd_conf, refresh::Refresher},
};
use fwcluster_lab::{
    Lab, in_netns,
    seed::{self, FWS1, FWS2, IC_IF, INET_CLIENT_ADDRESS, INTRA_CLIENT1},
};
use serde::Serialize;

use crate::failover::percentile;

/// Probe flows per measurement, and their rate.
const PROBES: usize = 1000;
const PROBE_RATE: f64 = 1000.0;
/// The rate at which the table is filled.
const FILL_RATE: f64 = 20_000.0;

/// One replication measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Replication {
    pub mode: &'static str,
    pub entries: usize,
    /// From the first fill packet until the peer held all N.
    pub fill_replicated_ms: f64,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    /// What a takeover waits for: the external cache's commit (`conntrackd -c`); zero when the
    /// entries are in the kernel table already.
    pub takeover_wait_ms: f64,
    /// The background claim after a takeover (`conntrackd -R`, `-B`), kernel-table mode.
    pub claim_ms: f64,
    /// Kernel-table mode: one reading of the active node's table by fwclusterd's refresher
    /// (which keeps the peers' copies of UDP and echo flows from expiring), done every 10 s
    /// with the default timeouts. The filled flows are idle: nothing is refreshed.
    pub refresh_read_ms: f64,
    /// conntrackd's resident memory on the active node and on the peer.
    pub rss_active_kib: u64,
    pub rss_peer_kib: u64,
}

fn mode_name(mode: PeerState) -> &'static str {
    match mode {
        PeerState::ExternalCache => "external cache, committed at takeover",
        PeerState::Kernel => "kernel table (DisableExternalCache), fwcluster's choice",
    }
}

/// conntrackd on one node of the lab, stopped when dropped.
struct Conntrackd {
    child: Child,
    conf: std::path::PathBuf,
    host: &'static str,
}

impl Drop for Conntrackd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Conntrackd {
    fn request(&self, lab: &Lab, args: &[&str]) -> Result<String> {
        let conf = self.conf.to_str().context("path")?;
        let mut all = vec!["-C", conf];
        all.extend_from_slice(args);
        let output = lab.run(self.host, "conntrackd", &all)?;
        ensure!(
            output.status.success(),
            "conntrackd {args:?} on {}: {}",
            self.host,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn rss_kib(&self) -> Result<u64> {
        crate::failover::rss_kib(self.child.id())
    }
}

fn seed_config(lab: &Lab) -> Result<Config> {
    Config::parse(
        Path::new("cluster.toml"),
        &format!(
            "[cluster]\nname = \"{}\"\n{}\n[sync]\ninterconnect = 0\n",
            lab.prefix(),
            fwcluster_lab::seed_servers!()
        ),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Both conntrackd with fwcluster's configuration in `mode`.
fn start_conntrackd(lab: &Lab, dir: &Path, mode: PeerState) -> Result<[Conntrackd; 2]> {
    let config = seed_config(lab)?;
    let start = |node: usize, host: &'static str| -> Result<Conntrackd> {
        let conf = dir.join(format!("conntrackd-{host}.conf"));
        std::fs::write(&conf, conntrackd_conf(&config, node, IC_IF, dir, mode)?)?;
        let child = lab
            .command(host, "conntrackd")
            .arg("-C")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting conntrackd (cargo xtask setup installs it)")?;
        Ok(Conntrackd { child, conf, host })
    };
    let daemons = [start(0, FWS1)?, start(1, FWS2)?];
    for host in [FWS1, FWS2] {
        let socket = dir.join(format!("conntrackd-{host}.ctl"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            if Instant::now() > deadline {
                bail!("conntrackd on {host} did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(daemons)
}

/// fws1 as the active firewall by hand (no fwclusterd: this part measures conntrackd alone):
/// group0's addresses, hide NAT of the intranet behind 192.0.2.10, and UDP entries that live
/// long enough for the measurement.
fn active_fws1(lab: &Lab) -> Result<()> {
    lab.run(
        FWS1,
        "ip",
        &["addr", "add", "203.0.113.10/24", "dev", "eth2"],
    )?;
    lab.run(FWS1, "ip", &["addr", "add", "192.0.2.10/24", "dev", "eth0"])?;
    lab.nft(
        FWS1,
        "table ip benchnat {\n chain post { type nat hook postrouting priority srcnat; oifname \"eth0\" snat to 192.0.2.10\n }\n}\n",
    )?;
    for host in [FWS1, FWS2] {
        lab.run(
            host,
            "sysctl",
            &["-qw", "net.netfilter.nf_conntrack_udp_timeout=600"],
        )?;
    }
    // The internet client drops what arrives (no port-unreachable storm back through fws1).
    lab.nft(
        seed::INET_CLIENT,
        "table inet sink {\n chain in { type filter hook input priority 0; udp dport 1-65535 drop\n }\n}\n",
    )?;
    Ok(())
}

/// Sends one datagram per flow from the intranet client, `rate` per second: flow `i` goes from
/// source port `base + i / 50000` to destination port `1000 + i % 50000` (a new entry each).
/// Returns each datagram's send time.
fn send_flows(lab: &Lab, base: u16, count: usize, rate: f64) -> Result<Vec<Instant>> {
    in_netns(lab.ns(INTRA_CLIENT1), move || -> Result<Vec<Instant>> {
        let sockets: Vec<UdpSocket> = (0..count.div_ceil(50_000))
            .map(|k| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, base + k as u16)))
            .collect::<std::io::Result<_>>()?;
        let start = Instant::now();
        let mut sent = Vec::with_capacity(count);
        for i in 0..count {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let to = SocketAddrV4::new(INET_CLIENT_ADDRESS, 1000 + (i % 50_000) as u16);
            sockets[i / 50_000].send_to(b"flow", to)?;
            sent.push(Instant::now());
        }
        Ok(sent)
    })?
}

/// How many of the flows the peer holds, read as fast as the mode allows: the kernel table's
/// entry count (a file read, microseconds), or conntrackd's external cache (a request to it).
fn peer_count(lab: &Lab, peer: &Conntrackd, mode: PeerState) -> Result<u64> {
    match mode {
        PeerState::Kernel => in_netns(lab.ns(FWS2), || -> Result<u64> {
            Ok(
                std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")?
                    .trim()
                    .parse()?,
            )
        })?,
        PeerState::ExternalCache => external_entries(&peer.request(lab, &["-s"])?),
    }
}

/// "cache external: current active connections" of `conntrackd -s`.
fn external_entries(stats: &str) -> Result<u64> {
    let section = stats
        .split("cache external:")
        .nth(1)
        .context("no external cache in conntrackd's statistics")?;
    let line = section
        .lines()
        .find(|l| l.starts_with("current active connections:"))
        .context("no active connections line")?;
    Ok(line.split_whitespace().last().context("count")?.parse()?)
}

/// Polls the peer's count on its own thread until stopped: (time, count) samples.
fn watch_peer(
    lab: &Lab,
    peer: &Conntrackd,
    mode: PeerState,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Instant, u64)>> {
    let ns = lab.ns(FWS2).to_owned();
    let conf = peer.conf.clone();
    std::thread::spawn(move || {
        let poll = move || -> Vec<(Instant, u64)> {
            let mut samples = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let count = match mode {
                    PeerState::Kernel => {
                        std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
                            .ok()
                            .and_then(|s| s.trim().parse().ok())
                    }
                    PeerState::ExternalCache => Command::new("conntrackd")
                        .arg("-C")
                        .arg(&conf)
                        .arg("-s")
                        .output()
                        .ok()
                        .and_then(|o| external_entries(&String::from_utf8_lossy(&o.stdout)).ok()),
                };
                if let Some(count) = count {
                    samples.push((Instant::now(), count));
                }
                if mode == PeerState::Kernel {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            samples
        };
        in_netns(&ns, poll).unwrap_or_default()
    })
}

/// One measurement: `entries` in the table, then the probes' lag.
fn replication(mode: PeerState, entries: usize) -> Result<Replication> {
    let lab = seed::build()?;
    let dir = tempfile::tempdir()?;
    active_fws1(&lab)?;
    // As fwclusterd sets it for its refresher: the entries carry packet counts.
    lab.run(
        FWS1,
        "sysctl",
        &["-qw", "net.netfilter.nf_conntrack_acct=1"],
    )?;
    let daemons = start_conntrackd(&lab, dir.path(), mode)?;
    let [active, peer] = &daemons;
    let base = peer_count(&lab, peer, mode)?;

    // Fill the table, and wait until the peer holds it all.
    let filled = Instant::now();
    send_flows(&lab, 20_000, entries, FILL_RATE)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while peer_count(&lab, peer, mode)? < base + entries as u64 {
        if Instant::now() > deadline {
            bail!(
                "{} {entries}: the peer holds {} of {entries} after 120 s",
                mode_name(mode),
                peer_count(&lab, peer, mode)? - base
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let fill_replicated_ms = filled.elapsed().as_secs_f64() * 1e3;

    // Probe flows at a steady rate; the k-th one is on the peer when the count first reaches
    // the count before the probes + k (FTFW delivers in order). That count is read once the
    // table is quiet, so entries of conntrackd's own traffic that appeared since the start do
    // not shift the matching (a shift of one is a millisecond at this rate).
    std::thread::sleep(Duration::from_millis(200));
    let before = peer_count(&lab, peer, mode)?;
    std::thread::sleep(Duration::from_millis(100));
    ensure!(
        peer_count(&lab, peer, mode)? == before,
        "the peer's table is not quiet before the probes"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_peer(&lab, peer, mode, stop.clone());
    std::thread::sleep(Duration::from_millis(50));
    let sent = send_flows(&lab, 30_000, PROBES, PROBE_RATE)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while peer_count(&lab, peer, mode)? < before + PROBES as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::SeqCst);
    let samples = watcher.join().map_err(|_| anyhow::anyhow!("watcher"))?;
    let mut lags = Vec::with_capacity(PROBES);
    let mut next = 0;
    for (k, at) in sent.iter().enumerate() {
        let want = before + k as u64 + 1;
        while next < samples.len() && samples[next].1 < want {
            next += 1;
        }
        let Some((seen, _)) = samples.get(next) else {
            bail!(
                "{} {entries}: probe {k} of {PROBES} never reached the peer",
                mode_name(mode)
            );
        };
        lags.push(seen.saturating_duration_since(*at).as_secs_f64() * 1e3);
    }

    // What a takeover waits for, and the background claim.
    let (takeover_wait_ms, claim_ms) = match mode {
        PeerState::ExternalCache => {
            let start = Instant::now();
            peer.request(&lab, &["-c"])?;
            (start.elapsed().as_secs_f64() * 1e3, 0.0)
        }
        PeerState::Kernel => {
            let start = Instant::now();
            peer.request(&lab, &["-R"])?;
            peer.request(&lab, &["-B"])?;
            (0.0, start.elapsed().as_secs_f64() * 1e3)
        }
    };
    let refresh_read_ms = match mode {
        PeerState::ExternalCache => 0.0,
        PeerState::Kernel => in_netns(lab.ns(FWS1), move || -> Result<f64> {
            let mut refresher = Refresher::new()?;
            // The first reading learns the counts; the second is the steady state.
            refresher.run_once()?;
            let start = Instant::now();
            let read = refresher.run_once()?;
            ensure!(
                read.read as usize >= entries,
                "the refresher read {} entries of {entries}",
                read.read
            );
            Ok(start.elapsed().as_secs_f64() * 1e3)
        })??,
    };
    let total = (entries + PROBES) as u64;
    if mode == PeerState::ExternalCache {
        let in_kernel = peer_count(&lab, peer, PeerState::Kernel)?;
        ensure!(
            in_kernel >= total,
            "the commit left {in_kernel} entries in fws2's kernel table, fewer than {total}"
        );
    }
    Ok(Replication {
        mode: mode_name(mode),
        entries,
        fill_replicated_ms,
        lag_p50_ms: percentile(&lags, 0.50),
        lag_p99_ms: percentile(&lags, 0.99),
        lag_max_ms: percentile(&lags, 1.0),
        takeover_wait_ms,
        claim_ms,
        refresh_read_ms,
        rss_active_kib: active.rss_kib()?,
        rss_peer_kib: peer.rss_kib()?,
    })
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let values: Vec<f64> = values.collect();
    percentile(&values, 0.5)
}

pub fn run(runs: usize, sizes: &[usize], json: Option<&Path>) -> Result<()> {
    println!(
        "session synchronization, replication: conntrackd as fwcluster configures it (FTFW over \
         UDP), {runs} runs per row, interleaved; {PROBES} probe flows at {PROBE_RATE}/s after \
         filling the table at {FILL_RATE}/s"
    );
    let mut rows: Vec<(PeerState, usize, Vec<Replication>)> = Vec::new();
    for &entries in sizes {
        for mode in [PeerState::ExternalCache, PeerState::Kernel] {
            rows.push((mode, entries, Vec::new()));
        }
    }
    let count = rows.len();
    for round in 0..runs {
        for k in 0..count {
            let (mode, entries, results) = &mut rows[(round + k) % count];
            let one = replication(*mode, *entries)
                .with_context(|| format!("{} {entries}, run {round}", mode_name(*mode)))?;
            eprintln!(
                "  {} {entries} run {round}: lag p99 {:.1} ms, takeover wait {:.0} ms",
                one.mode, one.lag_p99_ms, one.takeover_wait_ms
            );
            results.push(one);
        }
    }
    println!(
        "\n| peer's entries held in | tracked entries | fill replicated | lag p50 | lag p99 | lag max | takeover waits (commit) | background claim | table read for refreshes (every 10 s) | conntrackd RSS active / peer |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (mode, entries, results) in &rows {
        let m = |f: fn(&Replication) -> f64| median(results.iter().map(f));
        println!(
            "| {} | {entries} | {:.0} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} ms | {:.0} ms | {} | {:.0} / {:.0} KiB |",
            mode_name(*mode),
            m(|r| r.fill_replicated_ms),
            m(|r| r.lag_p50_ms),
            m(|r| r.lag_p99_ms),
            m(|r| r.lag_max_ms),
            m(|r| r.takeover_wait_ms),
            m(|r| r.claim_ms),
            match mode {
                PeerState::ExternalCache => "-".to_owned(),
                PeerState::Kernel => format!("{:.0} ms", m(|r| r.refresh_read_ms)),
            },
            m(|r| r.rss_active_kib as f64),
            m(|r| r.rss_peer_kib as f64),
        );
    }
    println!(
        "\n(medians over the runs. The lag is read on the peer by polling: the kernel table's \
         count every 0.1 ms, the external cache through `conntrackd -s`, whose round trip \
         (a few ms) bounds that column's resolution. Goal: lag p99 ≤ 10 ms; time added to a \
         takeover ≤ 10 % of conntrackd's own commit for 100k entries, or zero. Not shown: the \
         kernel's own memory for the entries, and TCP's window updates, which are sent as \
         entries change.)"
    );
    if let Some(path) = json {
        let all: Vec<&Replication> = rows.iter().flat_map(|(_, _, r)| r).collect();
        std::fs::write(path, serde_json::to_string_pretty(&all)?)?;
    }
    Ok(())
}
