//! `cargo xtask bench failover`: the client-visible outage when the active firewall loses all its
//! links, fwcluster (group mode and flow-share mode) against keepalived 2.2.7 (VRRPv3) on the
//! same seed network, the same heartbeat interval and the same miss count, run after run.
//!
//! The client probes the gateway address and a host behind it every millisecond on a fixed
//! schedule (never waiting for replies); the outage is the longest run of unanswered probes.

use std::{
    fs,
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use fwcluster_lab::{
    Lab,
    cluster::Cluster,
    seed::{
        self, FWS1, FWS2, GROUP0_INET_FIP, GROUP0_INET_FIP6, INET_CLIENT, INTRA_CLIENT1_ADDRESS,
        INTRA_CLIENT1_ADDRESS6,
    },
    traffic::{Probe, ProbeResult},
};
use serde::Serialize;

const PERIOD: Duration = Duration::from_millis(1);

#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub outage_ms: f64,
    pub lost: usize,
    pub sent: usize,
    /// Takeover overhead: from the survivor's decision that its peer is dead (its log line;
    /// keepalived: its transition to MASTER) to the first answered probe of the worse stream,
    /// on the same (wall) clock. `None` where there is no such decision (planned switchover).
    pub overhead_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub runs: usize,
    pub fwcluster_group: Vec<Run>,
    pub fwcluster_flowshare: Vec<Run>,
    /// The anchor: keepalived at its fastest (master 254, backup 253: the backup waits
    /// 3 adverts + 3/256 of one).
    pub keepalived: Vec<Run>,
    /// keepalived with the common priorities 150/100 (the backup waits 3 + 156/256 adverts).
    pub keepalived_150_100: Vec<Run>,
    /// An IPv6 gateway (R-V6-4): fwcluster, and keepalived's VRRPv3 for IPv6 at its fastest.
    pub fwcluster_group_ipv6: Vec<Run>,
    pub keepalived_ipv6: Vec<Run>,
    pub planned_switchover: Vec<Run>,
    pub moonshot_1ms: Vec<Run>,
    /// 1 ms / 5 ms without real-time priority.
    pub moonshot_1ms_normal: Vec<Run>,
    /// Probe answers of the first fwcluster and keepalived failover (1 ms each), for a plot.
    pub timeline_fwcluster: Vec<bool>,
    pub timeline_keepalived: Vec<bool>,
    pub usage: Vec<Usage>,
    pub soaks: Vec<Soak>,
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub interval_ms: f64,
    pub cpu_percent: f64,
    pub rss_kib: u64,
}

#[derive(Debug, Serialize)]
pub struct Soak {
    pub load: String,
    pub scheduling: String,
    pub minutes: u64,
    /// OFFLINE declarations and takeovers that no pause of the silent daemon explains.
    pub false_offline: usize,
    pub false_failover: usize,
    /// Those after the silent daemon itself reported that it had not been scheduled for about
    /// a timeout (FWC013): the machine's, not the protocol's.
    pub machine_offline: usize,
    pub machine_failover: usize,
    /// Longest silence per receiving node and interconnect: `(node, link, µs)`.
    pub max_gaps_us: Vec<(String, usize, u64)>,
    /// CPU time the hypervisor took from this machine during the soak (steal), ms.
    pub steal_ms: u64,
    /// The OFFLINE log lines, with how long the peer was silent.
    pub offline_lines: Vec<String>,
}

/// Millisecond heartbeats run with real-time scheduling, as an operator would set them up
/// (one configuration also measures them without).
fn realtime_priority(interval: &str) -> u8 {
    if interval == "1ms" { 10 } else { 0 }
}

fn servers(interval: &str, timeout: &str, wait: &str, priority: u8) -> String {
    format!(
        r#"heartbeat_interval = "{interval}"
heartbeat_timeout = "{timeout}"
wait_timeout = "{wait}"
realtime_priority = {priority}
{servers}"#,
        servers = fwcluster_lab::seed_servers!()
    )
}

const GROUP: &str = r#"
[[group]]
name = "group0"
policy = ["fws1", "fws2"]

  [[group.fip]]
  address = "192.0.2.10/24"
  interface = "eth0"

  [[group.fip]]
  address = "203.0.113.10/24"
  interface = "eth2"
"#;

const FLOWSHARE: &str = r#"
[[flowshare]]
name = "ls0"
address = "192.0.2.30/24"
interface = "eth0"
mac = "01:00:5e:00:02:1e"
hash = "src-dst"
"#;

/// group0 as an IPv6 gateway: the same two networks, their IPv6 prefixes.
const GROUP6: &str = r#"
[[group]]
name = "group0"
policy = ["fws1", "fws2"]

  [[group.fip]]
  address = "2001:db8::10/64"
  interface = "eth0"

  [[group.fip]]
  address = "2001:db8:2::10/64"
  interface = "eth2"
"#;

/// The gateway's addresses and the probes' targets of one address family.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    /// The gateway and a host behind it, probed from the internet client.
    fn targets(self) -> [std::net::IpAddr; 2] {
        match self {
            Self::V4 => [GROUP0_INET_FIP.into(), INTRA_CLIENT1_ADDRESS.into()],
            Self::V6 => [GROUP0_INET_FIP6.into(), INTRA_CLIENT1_ADDRESS6.into()],
        }
    }

    fn lab(self) -> Result<Lab> {
        match self {
            Self::V4 => seed::build(),
            Self::V6 => seed::build_dual_stack(),
        }
    }
}

fn probes(lab: &Lab, targets: &[std::net::IpAddr]) -> Result<Vec<Probe>> {
    targets
        .iter()
        .map(|t| Probe::start(lab.ns(INET_CLIENT), *t, PERIOD))
        .collect()
}

/// The worst of the probe streams; `decided` is when the survivor decided to take over.
fn finish(probes: Vec<Probe>, decided: Option<std::time::SystemTime>) -> Result<(Run, Vec<bool>)> {
    let results: Vec<ProbeResult> = probes
        .into_iter()
        .map(Probe::finish)
        .collect::<Result<_>>()?;
    let worst = results
        .iter()
        .max_by_key(|r| r.outage())
        .context("no probe")?;
    Ok((
        Run {
            outage_ms: worst.outage().as_secs_f64() * 1e3,
            lost: results.iter().map(ProbeResult::lost).sum(),
            sent: results.iter().map(ProbeResult::sent).sum(),
            overhead_ms: decided
                .zip(worst.recovered_at())
                .map(|(decided, recovered)| {
                    match recovered.duration_since(decided) {
                        Ok(after) => after.as_secs_f64() * 1e3,
                        // Answered before the log line was written: no overhead to speak of.
                        Err(before) => -before.duration().as_secs_f64() * 1e3,
                    }
                }),
        },
        worst.answered.clone(),
    ))
}

fn fwcluster_cluster(lab: &Lab, config: &str) -> Result<Cluster> {
    let mut cluster = Cluster::new(lab, config)?;
    cluster.start(lab, FWS1)?;
    cluster.start(lab, FWS2)?;
    cluster.wait_for(FWS2, "FWC101", "fws1 is ONLINE", Duration::from_secs(10))?;
    Ok(cluster)
}

/// One failover of group mode: fws1 loses every link.
fn fwcluster_group(
    interval: &str,
    timeout: &str,
    planned: bool,
    priority: u8,
) -> Result<(Run, Vec<bool>)> {
    fwcluster_gateway(Family::V4, interval, timeout, planned, priority)
}

/// One failover of group mode for a gateway of `family`.
fn fwcluster_gateway(
    family: Family,
    interval: &str,
    timeout: &str,
    planned: bool,
    priority: u8,
) -> Result<(Run, Vec<bool>)> {
    let lab = family.lab()?;
    let group = match family {
        Family::V4 => GROUP,
        Family::V6 => GROUP6,
    };
    let mut cluster =
        fwcluster_cluster(&lab, &(servers(interval, timeout, "3s", priority) + group))?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(10))?;
    let running = probes(&lab, &family.targets())?;
    std::thread::sleep(Duration::from_millis(300));
    if planned {
        cluster.stop(FWS1, Duration::from_secs(5))?;
    } else {
        lab.cut_host(FWS1)?;
    }
    cluster.wait_for(
        FWS2,
        "FWC201",
        "group0 is active on fws2",
        Duration::from_secs(10),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    // The survivor's decision: fws1 declared dead (a planned switchover has none).
    let decided = cluster
        .lines_with(FWS2, "FWC102")
        .last()
        .and_then(|line| fwcluster_lab::cluster::line_time(line))
        .filter(|_| !planned);
    finish(running, decided)
}

/// One failover of flow-share mode: the node passing the probe's flow loses every link.
fn fwcluster_flowshare(interval: &str, timeout: &str) -> Result<(Run, Vec<bool>)> {
    let lab = seed::build()?;
    let cluster = fwcluster_cluster(
        &lab,
        &(servers(interval, timeout, "3s", realtime_priority(interval)) + FLOWSHARE),
    )?;
    let shared: std::net::Ipv4Addr = "192.0.2.30".parse()?;
    let running = probes(&lab, &[shared.into()])?;
    std::thread::sleep(Duration::from_millis(300));
    let passed =
        |host: &str| -> Result<u64> { Ok(cluster.status(host)?.xdp_counters["flow_passed"]) };
    let victim = if passed(FWS1)? >= passed(FWS2)? {
        FWS1
    } else {
        FWS2
    };
    let survivor = if victim == FWS1 { FWS2 } else { FWS1 };
    lab.cut_host(victim)?;
    let line = cluster.wait_for(
        survivor,
        "FWC102",
        &format!("{victim} is OFFLINE"),
        Duration::from_secs(10),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    finish(running, fwcluster_lab::cluster::line_time(&line))
}

fn keepalived_config(family: Family, router: &str, priority: u32, advert: &str) -> String {
    if family == Family::V6 {
        return keepalived_config6(router, priority, advert);
    }
    format!(
        r#"global_defs {{
  router_id {router}
  vrrp_garp_master_delay 0
  vrrp_garp_master_repeat 1
}}
vrrp_sync_group G {{
  group {{
    inet
    intra
  }}
}}
vrrp_instance inet {{
  state BACKUP
  interface eth0
  virtual_router_id 51
  version 3
  priority {priority}
  advert_int {advert}
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
  advert_int {advert}
  virtual_ipaddress {{
    203.0.113.10/24
  }}
}}
"#
    )
}

/// keepalived's IPv6 gateway: VRRPv3 over IPv6 (adverts from the link-local address) for the
/// same two networks, each instance's first virtual address link-local as keepalived asks
/// (RFC 5798 5.2.9); keepalived adds IPv6 addresses without duplicate-address detection and
/// announces them with unsolicited Neighbor Advertisements.
fn keepalived_config6(router: &str, priority: u32, advert: &str) -> String {
    format!(
        r#"global_defs {{
  router_id {router}
  vrrp_garp_master_delay 0
  vrrp_garp_master_repeat 1
}}
vrrp_sync_group G {{
  group {{
    inet6
    intra6
  }}
}}
vrrp_instance inet6 {{
  state BACKUP
  interface eth0
  virtual_router_id 61
  version 3
  priority {priority}
  advert_int {advert}
  virtual_ipaddress {{
    fe80::10/64
    2001:db8::10/64
  }}
}}
vrrp_instance intra6 {{
  state BACKUP
  interface eth2
  virtual_router_id 62
  version 3
  priority {priority}
  advert_int {advert}
  virtual_ipaddress {{
    fe80::10/64
    2001:db8:2::10/64
  }}
}}
"#
    )
}

/// keepalived processes, with their console log lines and when each arrived.
struct Keepalived {
    children: Vec<Child>,
    lines: std::sync::Arc<std::sync::Mutex<Vec<LogLine>>>,
}

/// A host's console line and when it arrived.
type LogLine = (&'static str, std::time::SystemTime, String);

impl Keepalived {
    /// When `host` last logged a line containing `text` (a backup may pass through MASTER at
    /// start, before it hears the master).
    fn logged(&self, host: &str, text: &str) -> Option<std::time::SystemTime> {
        self.lines
            .lock()
            .expect("keepalived lines")
            .iter()
            .rfind(|(h, _, line)| *h == host && line.contains(text))
            .map(|(_, at, _)| *at)
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn has_address(lab: &Lab, host: &str, address: &str) -> bool {
    lab.run(host, "ip", &["-o", "addr", "show", "dev", "eth0"])
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{address}/")))
        .unwrap_or(false)
}

pub fn wait_address(lab: &Lab, host: &str, address: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !has_address(lab, host, address) {
        if Instant::now() > deadline {
            bail!("{address} did not appear on {host}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// VRRP priorities of the master and the backup.
#[derive(Clone, Copy)]
struct Priorities(u32, u32);

/// keepalived's fastest failover: in VRRPv3 the backup waits 3 adverts plus
/// (256 − priority)/256 of one, so the highest backup priority below the master's detects first.
const FASTEST: Priorities = Priorities(254, 253);
/// What most configurations use.
const COMMON: Priorities = Priorities(150, 100);

fn start_keepalived(
    lab: &Lab,
    dir: &Path,
    family: Family,
    advert: &str,
    priorities: Priorities,
) -> Result<Keepalived> {
    let mut children = Vec::new();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    for (host, priority) in [(FWS1, priorities.0), (FWS2, priorities.1)] {
        let conf = dir.join(format!("{host}.conf"));
        fs::write(&conf, keepalived_config(family, host, priority, advert))?;
        let child = lab
            .command(host, "keepalived")
            .args(["-n", "-l", "-P", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(dir.join(format!("{host}.pid")))
            .arg("-r")
            .arg(dir.join(format!("{host}-vrrp.pid")))
            .arg("-c")
            .arg(dir.join(format!("{host}-check.pid")))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting keepalived")?;
        // Its console log, each line stamped when it arrives (keepalived's own console lines
        // carry no sub-second time).
        let mut child = child;
        let outputs: Vec<Box<dyn std::io::Read + Send>> = vec![
            Box::new(child.stdout.take().context("keepalived stdout")?),
            Box::new(child.stderr.take().context("keepalived stderr")?),
        ];
        for output in outputs {
            let lines = lines.clone();
            std::thread::spawn(move || {
                use std::io::BufRead as _;
                for line in std::io::BufReader::new(output)
                    .lines()
                    .map_while(Result::ok)
                {
                    let at = std::time::SystemTime::now();
                    lines
                        .lock()
                        .expect("keepalived lines")
                        .push((host, at, line));
                }
            });
        }
        children.push(child);
    }
    Ok(Keepalived { children, lines })
}

/// One failover of keepalived: fws1 (the master) loses every link.
fn keepalived(advert: &str, priorities: Priorities) -> Result<(Run, Vec<bool>)> {
    keepalived_gateway(Family::V4, advert, priorities)
}

/// One failover of keepalived's gateway of `family`.
fn keepalived_gateway(
    family: Family,
    advert: &str,
    priorities: Priorities,
) -> Result<(Run, Vec<bool>)> {
    let lab = family.lab()?;
    let dir = tempfile::tempdir()?;
    let keepalived = start_keepalived(&lab, dir.path(), family, advert, priorities)?;
    let gateway = family.targets()[0].to_string();
    wait_address(&lab, FWS1, &gateway, Duration::from_secs(10))?;
    // A backup may pass through MASTER at start; the run starts with one master only.
    let deadline = Instant::now() + Duration::from_secs(5);
    while has_address(&lab, FWS2, &gateway) {
        if Instant::now() > deadline {
            bail!("both keepalived nodes hold {gateway}: they do not hear each other");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    let running = probes(&lab, &family.targets())?;
    std::thread::sleep(Duration::from_millis(300));
    lab.cut_host(FWS1)?;
    wait_address(&lab, FWS2, &gateway, Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_millis(300));
    finish(running, keepalived.logged(FWS2, "Entering MASTER STATE"))
}

pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn outages(runs: &[Run]) -> Vec<f64> {
    runs.iter().map(|r| r.outage_ms).collect()
}

/// The configurations' names (rows).
const KA: &str = "keepalived advert_int 0.01, priorities 254/253";
const KA6: &str = "keepalived IPv6 advert_int 0.01, priorities 254/253";
const KA_COMMON: &str = "keepalived advert_int 0.01, priorities 150/100";
const GROUP_ROW: &str = "fwcluster group 10ms/30ms";
const GROUP6_ROW: &str = "fwcluster IPv6 gateway 10ms/30ms";
const FLOWSHARE_ROW: &str = "fwcluster flow share 10ms/30ms";
const PLANNED_ROW: &str = "fwcluster planned switchover";
const MOONSHOT_ROW: &str = "fwcluster group 1ms/5ms, real-time priority 10";
const MOONSHOT_NORMAL_ROW: &str = "fwcluster group 1ms/5ms, normal scheduling";

/// One configuration of the failover benchmark.
struct Configuration {
    name: &'static str,
    one: Box<dyn Fn() -> Result<(Run, Vec<bool>)>>,
    runs: Vec<Run>,
    /// The probe answers of its first run.
    timeline: Vec<bool>,
}

/// Runs every configuration `runs` times, one run of each per round, the order rotating from
/// round to round: a slow spell of the machine hits every configuration alike, not a block of
/// one of them.
fn interleaved(runs: usize, configurations: &mut [Configuration]) -> Result<()> {
    let count = configurations.len();
    for round in 0..runs {
        for k in 0..count {
            let c = &mut configurations[(round + k) % count];
            let (run, timeline) = (c.one)().with_context(|| format!("{}, run {round}", c.name))?;
            eprintln!("  {} run {round}: outage {:.0} ms", c.name, run.outage_ms);
            if c.runs.is_empty() {
                c.timeline = timeline;
            }
            c.runs.push(run);
        }
    }
    Ok(())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .context("stat")?
        .1
        .split_whitespace()
        .collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")
}

/// Idle CPU and RSS of the active node's daemon at one interval.
fn usage(interval: &str, timeout: &str, interval_ms: f64) -> Result<Usage> {
    let lab = seed::build()?;
    let cluster = fwcluster_cluster(
        &lab,
        &(servers(interval, timeout, "3s", realtime_priority(interval)) + GROUP),
    )?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_secs(1));
    // The daemon process under its supervisor.
    let supervisor = cluster.pid(FWS1).context("pid")?;
    let pid: u32 = fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children"))?
        .split_whitespace()
        .next()
        .context("worker")?
        .parse()?;
    let before = cpu_ticks(pid)?;
    let window = Duration::from_secs(10);
    std::thread::sleep(window);
    let used = (cpu_ticks(pid)? - before) as f64 / clock_ticks();
    Ok(Usage {
        interval_ms,
        cpu_percent: used / window.as_secs_f64() * 100.0,
        rss_kib: rss_kib(pid)?,
    })
}

/// 1 ms heartbeats, 5 ms timeout, for `minutes`, with both cores `busy` or idle: the OFFLINE
/// declarations and failovers, told apart by whether the silent daemon reported a pause.
fn soak(minutes: u64, busy: bool, priority: u8) -> Result<Soak> {
    let lab = seed::build()?;
    let cluster = fwcluster_cluster(&lab, &(servers("1ms", "5ms", "3s", priority) + GROUP))?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(10))?;
    let since = std::time::SystemTime::now();
    let mut burners: Vec<Child> = Vec::new();
    if busy {
        // Inside the lab, so the lab's cleanup kills them even when the benchmark is killed
        // (a burner left over from an interrupted run once kept both cores busy for hours).
        for _ in 0..2 {
            burners.push(
                lab.command(INET_CLIENT, "sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()?,
            );
        }
    }
    let cpu_before = fwcluster_lab::machine::CpuTimes::now()?;
    std::thread::sleep(Duration::from_secs(60 * minutes));
    for mut b in burners {
        let _ = b.kill();
        let _ = b.wait();
    }
    let mut max_gaps_us = Vec::new();
    for node in [FWS1, FWS2] {
        for hb in cluster.status(node)?.heartbeats {
            max_gaps_us.push((node.to_owned(), hb.link, hb.max_gap_us));
        }
    }
    let verdict = fwcluster_lab::verdict::Verdict::of(&cluster, since, &[]);
    let offline_lines: Vec<String> = [FWS1, FWS2]
        .iter()
        .flat_map(|n| cluster.lines_with(n, "FWC102"))
        .collect();
    Ok(Soak {
        load: if busy { "both cores busy" } else { "idle" }.into(),
        scheduling: if priority > 0 {
            format!("real-time priority {priority}")
        } else {
            "normal scheduling".into()
        },
        minutes,
        false_offline: verdict.false_offline.len(),
        false_failover: verdict.false_failovers.len(),
        machine_offline: verdict.machine_offline,
        machine_failover: verdict.machine_failovers,
        max_gaps_us,
        steal_ms: fwcluster_lab::machine::CpuTimes::now()?
            .since(&cpu_before)
            .steal_ms,
        offline_lines,
    })
}

/// The soaks of a run: real-time priority and normal scheduling, each idle and with both
/// cores busy.
fn soaks(minutes: u64) -> Result<Vec<Soak>> {
    let mut soaks = Vec::new();
    for priority in [realtime_priority("1ms"), 0] {
        for busy in [false, true] {
            soaks.push(soak(minutes, busy, priority)?);
        }
    }
    Ok(soaks)
}

fn print_soak(s: &Soak) {
    println!(
        "soak 1 ms / 5 ms, {} min, {}, {}: {} false OFFLINE, {} false failovers; {} OFFLINE and \
         {} failovers after the silent daemon reported its own pause (FWC013)",
        s.minutes,
        s.scheduling,
        s.load,
        s.false_offline,
        s.false_failover,
        s.machine_offline,
        s.machine_failover
    );
    let gaps: Vec<String> = s
        .max_gaps_us
        .iter()
        .map(|(node, link, us)| format!("{node} link {link} {:.1} ms", *us as f64 / 1e3))
        .collect();
    println!(
        "  longest silence heard: {}; hypervisor steal during the soak: {} ms",
        gaps.join(", "),
        s.steal_ms
    );
    for line in &s.offline_lines {
        println!("  {line}");
    }
}

pub fn run(runs: usize, soak_minutes: u64, json: Option<&Path>, ipv6_only: bool) -> Result<()> {
    if runs == 0 {
        // Only the resource usage and the soaks.
        for u in [usage("10ms", "30ms", 10.0)?, usage("1ms", "5ms", 1.0)?] {
            println!(
                "{} ms heartbeats: {:.2} % of a core, RSS {} KiB",
                u.interval_ms, u.cpu_percent, u.rss_kib
            );
        }
        if soak_minutes > 0 {
            soaks(soak_minutes)?.iter().for_each(print_soak);
        }
        return Ok(());
    }
    println!(
        "fwcluster failover benchmark: {runs} runs per configuration, interleaved round by round, \
         probes every 1 ms (one socket and ICMP identifier per probe stream)"
    );
    println!("(same seed network, 10 ms heartbeats / adverts, 3 missed = 30 ms)");
    let configuration = |name, one: Box<dyn Fn() -> Result<(Run, Vec<bool>)>>| Configuration {
        name,
        one,
        runs: Vec::new(),
        timeline: Vec::new(),
    };
    // The anchor, the IPv4 gateway and the IPv6 rows run in every kind of run.
    let mut configurations = vec![
        configuration(KA, Box::new(|| keepalived("0.01", FASTEST))),
        configuration(
            KA6,
            Box::new(|| keepalived_gateway(Family::V6, "0.01", FASTEST)),
        ),
        configuration(
            GROUP_ROW,
            Box::new(|| fwcluster_group("10ms", "30ms", false, 0)),
        ),
        configuration(
            GROUP6_ROW,
            Box::new(|| fwcluster_gateway(Family::V6, "10ms", "30ms", false, 0)),
        ),
    ];
    if !ipv6_only {
        configurations.extend([
            configuration(KA_COMMON, Box::new(|| keepalived("0.01", COMMON))),
            configuration(
                FLOWSHARE_ROW,
                Box::new(|| fwcluster_flowshare("10ms", "30ms")),
            ),
            configuration(
                PLANNED_ROW,
                Box::new(|| fwcluster_group("10ms", "30ms", true, 0)),
            ),
            configuration(
                MOONSHOT_ROW,
                Box::new(|| fwcluster_group("1ms", "5ms", false, 10)),
            ),
            configuration(
                MOONSHOT_NORMAL_ROW,
                Box::new(|| fwcluster_group("1ms", "5ms", false, 0)),
            ),
        ]);
    }
    interleaved(runs, &mut configurations)?;
    let mut taken: std::collections::BTreeMap<&str, (Vec<Run>, Vec<bool>)> = configurations
        .into_iter()
        .map(|c| (c.name, (c.runs, c.timeline)))
        .collect();
    let mut take = |name: &str| taken.remove(name).unwrap_or_default();
    let (ka, timeline_keepalived) = take(KA);
    let (ka6, _) = take(KA6);
    let (group, timeline_fwcluster) = take(GROUP_ROW);
    let (group6, _) = take(GROUP6_ROW);
    let (ka_common, _) = take(KA_COMMON);
    let (flowshare, _) = take(FLOWSHARE_ROW);
    let (planned, _) = take(PLANNED_ROW);
    let (moonshot, _) = take(MOONSHOT_ROW);
    let (moonshot_normal, _) = take(MOONSHOT_NORMAL_ROW);

    let ka_p95 = percentile(&outages(&ka), 0.95);
    println!(
        "\n| configuration | median outage | p95 outage | max outage | p95 vs keepalived 254/253 | takeover overhead median / p95 | goal |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
    let line = |name: &str, runs: &[Run], goal: &str| {
        if runs.is_empty() {
            return;
        }
        let o = outages(runs);
        let overhead: Vec<f64> = runs.iter().filter_map(|r| r.overhead_ms).collect();
        let overhead = if overhead.is_empty() {
            "–".to_owned()
        } else {
            format!(
                "{:.1} / {:.1} ms",
                percentile(&overhead, 0.5),
                percentile(&overhead, 0.95)
            )
        };
        println!(
            "| {name} | {:.0} ms | {:.0} ms | {:.0} ms | {:.2}× | {overhead} | {goal} |",
            percentile(&o, 0.5),
            percentile(&o, 0.95),
            percentile(&o, 1.0),
            percentile(&o, 0.95) / ka_p95
        );
    };
    line(
        "keepalived 2.2.7 VRRPv3, advert_int 0.01, priorities 254/253 (anchor: its fastest)",
        &ka,
        "",
    );
    line(
        "keepalived 2.2.7 VRRPv3, advert_int 0.01, priorities 150/100 (common, for context)",
        &ka_common,
        "",
    );
    line(
        "keepalived 2.2.7 VRRPv3 for IPv6, advert_int 0.01, priorities 254/253 (its fastest)",
        &ka6,
        "",
    );
    line("fwcluster group mode, 10 ms / 30 ms", &group, "≤ 1.00×");
    let group_p95 = percentile(&outages(&group), 0.95);
    line(
        "fwcluster group mode, IPv6 gateway, 10 ms / 30 ms",
        &group6,
        &format!("p95 within 2 ms of the IPv4 row's {group_p95:.0} ms"),
    );
    line("fwcluster flow share, 10 ms / 30 ms", &flowshare, "≤ 1.00×");
    line("fwcluster planned switchover (SIGTERM)", &planned, "≤ 5 ms");
    line(
        "fwcluster group mode, 1 ms / 5 ms, real-time priority 10",
        &moonshot,
        "≤ 0.25×",
    );
    line(
        "fwcluster group mode, 1 ms / 5 ms, normal scheduling",
        &moonshot_normal,
        "≤ 0.25×",
    );
    println!(
        "\n(keepalived and the 10 ms rows run with normal scheduling, as keepalived's defaults do. \
         The IPv6 rows run on the dual-stack seed network and probe the IPv6 gateway and a host \
         behind it.)"
    );
    println!(
        "\nIPv6 gateway vs IPv4 gateway (fwcluster, p95): {:+.1} ms",
        percentile(&outages(&group6), 0.95) - group_p95
    );
    println!("\nper round (fwcluster group ÷ keepalived 254/253, same round):");
    let pairs: Vec<String> = group
        .iter()
        .zip(&ka)
        .map(|(f, k)| format!("{:.2}", f.outage_ms / k.outage_ms.max(1.0)))
        .collect();
    println!("  {}", pairs.join(" "));
    if ipv6_only {
        return Ok(());
    }
    let usage = vec![usage("10ms", "30ms", 10.0)?, usage("1ms", "5ms", 1.0)?];
    let soaks = if soak_minutes > 0 {
        soaks(soak_minutes)?
    } else {
        Vec::new()
    };

    println!("\n| daemon at rest | CPU | RSS |");
    println!("| --- | ---: | ---: |");
    for u in &usage {
        println!(
            "| {} ms heartbeats | {:.2} % of a core | {} KiB |",
            u.interval_ms, u.cpu_percent, u.rss_kib
        );
    }
    for s in &soaks {
        print_soak(s);
    }
    if let Some(path) = json {
        let results = Results {
            runs,
            fwcluster_group: group,
            fwcluster_flowshare: flowshare,
            keepalived: ka,
            keepalived_150_100: ka_common,
            fwcluster_group_ipv6: group6,
            keepalived_ipv6: ka6,
            planned_switchover: planned,
            moonshot_1ms: moonshot,
            moonshot_1ms_normal: moonshot_normal,
            timeline_fwcluster,
            timeline_keepalived,
            usage,
            soaks,
        };
        fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}
