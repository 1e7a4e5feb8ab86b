//! The network-namespace lab of fwcluster's tests, benchmarks and demo.
//!
//! A [`Lab`] builds a [`Topology`] (hosts as network namespaces, segments as bridges inside one
//! "switch" namespace, veth pairs between them, addresses and routes) and removes all of it on
//! drop, also while unwinding from a panic. Every name carries a per-run prefix
//! (`fwl<pid>x<n>`), so tests can run in parallel, and a new lab first removes what runs of dead
//! processes left behind (namespaces, the processes in them, bpffs pins).
//!
//! Nothing is created in the root namespace: veth pairs are created directly inside their
//! namespaces, and test traffic only flows between the lab's own namespaces.

pub mod arp;
pub mod chaos;
pub mod cluster;
pub mod firewall;
pub mod frames;
pub mod freezer;
pub mod machine;
pub mod ndp;
pub mod netns;
pub mod seed;
pub mod sessions;
pub mod smtp;
pub mod traffic;
pub mod verdict;
pub mod xdp;

use std::{
    collections::BTreeMap,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};

pub use netns::{in_netns, netns_command};

/// Prefix shared by every lab name; followed by `<pid>x<counter>`.
pub const LAB_PREFIX: &str = "fwl";
const NETNS_DIR: &str = "/var/run/netns";
const BPFFS: &str = "/sys/fs/bpf";

/// One interface of a host, plugged into a segment.
#[derive(Clone, Debug)]
pub struct InterfaceSpec {
    pub name: String,
    pub segment: String,
    pub addresses: Vec<String>,
}

/// A host of the lab (one network namespace).
#[derive(Clone, Debug)]
pub struct HostSpec {
    pub name: String,
    pub interfaces: Vec<InterfaceSpec>,
    /// `(destination, gateway)`; destination `default` or a prefix.
    pub routes: Vec<(String, String)>,
    /// Enables IPv4 forwarding (firewalls and routers).
    pub forwarding: bool,
}

impl HostSpec {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            interfaces: Vec::new(),
            routes: Vec::new(),
            forwarding: false,
        }
    }

    pub fn interface(mut self, name: &str, segment: &str, addresses: &[&str]) -> Self {
        self.interfaces.push(InterfaceSpec {
            name: name.to_owned(),
            segment: segment.to_owned(),
            addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
        });
        self
    }

    pub fn route(mut self, destination: &str, gateway: &str) -> Self {
        self.routes
            .push((destination.to_owned(), gateway.to_owned()));
        self
    }

    pub fn forwarding(mut self) -> Self {
        self.forwarding = true;
        self
    }
}

/// Hosts and the segments (bridges) that join them.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    pub hosts: Vec<HostSpec>,
}

impl Topology {
    pub fn host(mut self, host: HostSpec) -> Self {
        self.hosts.push(host);
        self
    }

    fn segments(&self) -> Vec<String> {
        let mut segments: Vec<String> = self
            .hosts
            .iter()
            .flat_map(|h| h.interfaces.iter().map(|i| i.segment.clone()))
            .collect();
        segments.sort();
        segments.dedup();
        segments
    }
}

/// Direction of injected loss, seen from the host of the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Frames the host sends.
    FromHost,
    /// Frames sent to the host.
    ToHost,
    Both,
}

/// A running lab. Dropping it removes everything it created.
pub struct Lab {
    prefix: String,
    /// host name → namespace name
    namespaces: BTreeMap<String, String>,
    switch: String,
    /// (host, interface) → switch-side port name
    ports: BTreeMap<(String, String), String>,
    topology: Topology,
}

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

fn next_prefix() -> String {
    format!(
        "{LAB_PREFIX}{}x{}",
        std::process::id(),
        LAB_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A bpffs directory of its own for tests that need pins but no network
/// (`/sys/fs/bpf/<prefix>`), removed on drop and as a leftover of a dead run.
pub struct Scratch {
    prefix: String,
}

impl Scratch {
    pub fn new() -> Result<Self> {
        remove_stale()?;
        Ok(Self {
            prefix: next_prefix(),
        })
    }

    /// Pin directory of a node inside this scratch area.
    pub fn pin_dir(&self, node: &str) -> PathBuf {
        Path::new(BPFFS).join(&self.prefix).join(node)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = remove_run(&self.prefix) {
            eprintln!("scratch {}: cleanup failed: {e:#}", self.prefix);
        }
    }
}

impl Lab {
    /// Builds a topology. Removes leftovers of crashed runs first.
    pub fn build(topology: Topology) -> Result<Self> {
        ensure!(
            nix::unistd::geteuid().is_root(),
            "the lab needs root (network namespaces, veth, XDP)"
        );
        remove_stale()?;
        let prefix = next_prefix();
        let mut lab = Self {
            switch: format!("{prefix}-switch"),
            prefix,
            namespaces: BTreeMap::new(),
            ports: BTreeMap::new(),
            topology: topology.clone(),
        };
        // From here on, a failure drops `lab`, which removes what was created so far.
        lab.create(&topology)?;
        Ok(lab)
    }

    fn create(&mut self, topology: &Topology) -> Result<()> {
        add_netns(&self.switch)?;
        ip(&["-n", &self.switch, "link", "set", "lo", "up"])?;
        for segment in topology.segments() {
            let bridge = format!("br-{segment}");
            ip(&["-n", &self.switch, "link", "add", &bridge, "type", "bridge"])?;
            ip(&["-n", &self.switch, "link", "set", &bridge, "up"])?;
        }
        for (host_index, host) in topology.hosts.iter().enumerate() {
            let ns = format!("{}-{}", self.prefix, host.name);
            add_netns(&ns)?;
            self.namespaces.insert(host.name.clone(), ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            sysctl(
                &ns,
                "net/ipv4/ip_forward",
                if host.forwarding { "1" } else { "0" },
            )?;
            sysctl(
                &ns,
                "net/ipv6/conf/all/forwarding",
                if host.forwarding { "1" } else { "0" },
            )?;
            for (if_index, interface) in host.interfaces.iter().enumerate() {
                let port = format!("h{host_index}p{if_index}");
                ip(&[
                    "link",
                    "add",
                    &interface.name,
                    "netns",
                    &ns,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &port,
                    "netns",
                    &self.switch,
                ])
                .with_context(|| format!("veth {}:{}", host.name, interface.name))?;
                ip(&[
                    "-n",
                    &self.switch,
                    "link",
                    "set",
                    &port,
                    "master",
                    &format!("br-{}", interface.segment),
                    "up",
                ])?;
                for address in &interface.addresses {
                    // The lab's own IPv6 addresses skip duplicate-address detection (a second
                    // of `tentative` each); the interfaces keep it on, so a cluster address
                    // added without `nodad` would go through it.
                    let mut args = vec!["-n", &ns, "addr", "add", address, "dev", &interface.name];
                    if address.contains(':') {
                        args.push("nodad");
                    }
                    ip(&args)?;
                }
                ip(&["-n", &ns, "link", "set", &interface.name, "up"])?;
                self.ports
                    .insert((host.name.clone(), interface.name.clone()), port);
            }
            for (destination, gateway) in &host.routes {
                ip(&["-n", &ns, "route", "add", destination, "via", gateway])?;
            }
        }
        Ok(())
    }

    /// The run's unique prefix (also used as the cluster name, i.e. the bpffs pin directory).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Namespace name of a host.
    pub fn ns(&self, host: &str) -> &str {
        self.namespaces
            .get(host)
            .unwrap_or_else(|| panic!("no host {host} in this lab"))
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// bpffs directory of this run (`/sys/fs/bpf/<prefix>`).
    pub fn pin_root(&self) -> PathBuf {
        Path::new(BPFFS).join(&self.prefix)
    }

    /// A command that runs inside a host's namespace.
    pub fn command(&self, host: &str, program: &str) -> Command {
        netns_command(self.ns(host), program)
    }

    /// Runs a command in a host's namespace and returns its output; fails on a non-zero exit.
    pub fn run(&self, host: &str, program: &str, args: &[&str]) -> Result<Output> {
        let output = self
            .command(host, program)
            .args(args)
            .output()
            .with_context(|| format!("spawning {program} in {host}"))?;
        ensure!(
            output.status.success(),
            "{program} {args:?} in {host} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(output)
    }

    /// MAC address of a host's interface.
    pub fn mac(&self, host: &str, interface: &str) -> Result<[u8; 6]> {
        let interface = interface.to_owned();
        in_netns(self.ns(host), move || arp::interface_mac(&interface))?
    }

    /// Interface index of a host's interface.
    pub fn ifindex(&self, host: &str, interface: &str) -> Result<u32> {
        let interface = interface.to_owned();
        in_netns(self.ns(host), move || {
            nix::net::if_::if_nametoindex(interface.as_str())
                .with_context(|| format!("interface {interface}"))
        })?
    }

    /// Sends one ARP request for `target` from `host`'s `interface` and returns every answer
    /// received within `wait` (so two answering nodes show up as two answers).
    pub fn arp_request(
        &self,
        host: &str,
        interface: &str,
        target: Ipv4Addr,
        wait: Duration,
    ) -> Result<Vec<arp::ArpAnswer>> {
        let interface = interface.to_owned();
        in_netns(self.ns(host), move || {
            arp::request(&interface, target, wait)
        })?
    }

    /// Watches who answers ARP for `targets` on `host`'s `interface` (see [`arp::ArpWatch`]).
    pub fn arp_watch(
        &self,
        host: &str,
        interface: &str,
        targets: Vec<Ipv4Addr>,
        every: Duration,
    ) -> Result<arp::ArpWatch> {
        arp::ArpWatch::start(
            &format!("/var/run/netns/{}", self.ns(host)),
            interface,
            targets,
            every,
        )
    }

    /// Pings `destination` from `host`; returns the number of replies.
    pub fn ping(&self, host: &str, destination: Ipv4Addr, count: u32) -> Result<u32> {
        let output = self
            .command(host, "ping")
            .args(["-n", "-q", "-c", &count.to_string(), "-i", "0.2", "-W", "1"])
            .arg(destination.to_string())
            .output()
            .context("spawning ping")?;
        let text = String::from_utf8_lossy(&output.stdout);
        let received = text
            .lines()
            .find_map(|l| {
                let (_, rest) = l.split_once(" transmitted, ")?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .with_context(|| format!("unexpected ping output: {text}"))?;
        Ok(received)
    }

    fn port(&self, host: &str, interface: &str) -> Result<&str> {
        self.ports
            .get(&(host.to_owned(), interface.to_owned()))
            .map(String::as_str)
            .with_context(|| format!("no link {host}:{interface} in this lab"))
    }

    /// Cuts one link (the switch side goes down, as if the cable were pulled).
    pub fn cut(&self, host: &str, interface: &str) -> Result<()> {
        let port = self.port(host, interface)?;
        ip(&["-n", &self.switch, "link", "set", port, "down"])
    }

    /// Restores a cut link.
    pub fn restore(&self, host: &str, interface: &str) -> Result<()> {
        let port = self.port(host, interface)?;
        ip(&["-n", &self.switch, "link", "set", port, "up"])
    }

    fn interfaces_of(&self, host: &str) -> Vec<String> {
        self.topology
            .hosts
            .iter()
            .filter(|h| h.name == host)
            .flat_map(|h| h.interfaces.iter().map(|i| i.name.clone()))
            .collect()
    }

    /// Cuts every link of a host at once (one `ip -batch`: a host dies all at once).
    pub fn cut_host(&self, host: &str) -> Result<()> {
        self.set_host_links(host, "down")
    }

    /// Restores every link of a host at once.
    pub fn restore_host(&self, host: &str) -> Result<()> {
        self.set_host_links(host, "up")
    }

    fn set_host_links(&self, host: &str, state: &str) -> Result<()> {
        let mut batch = String::new();
        for interface in self.interfaces_of(host) {
            batch.push_str(&format!(
                "link set {} {state}\n",
                self.port(host, &interface)?
            ));
        }
        let mut child = Command::new("ip")
            .args(["-n", &self.switch, "-batch", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("spawning ip -batch")?;
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(batch.as_bytes())?;
        let output = child.wait_with_output()?;
        ensure!(
            output.status.success(),
            "ip -batch failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// Drops `percent` % of the frames on a link (nftables `numgen random mod 100 < N drop` on
    /// the switch port); 0 removes the loss.
    pub fn set_loss(
        &self,
        host: &str,
        interface: &str,
        percent: u8,
        direction: Direction,
    ) -> Result<()> {
        ensure!(percent <= 100, "loss of {percent} % is not a percentage");
        let port = self.port(host, interface)?;
        let table = format!("loss_{port}");
        // Remove the old rules (ignore "no such table").
        let _ = self
            .command_in_switch("nft")
            .args(["delete", "table", "netdev", &table])
            .output();
        if percent == 0 {
            return Ok(());
        }
        // Switch-port ingress carries what the host sent; egress what goes to the host.
        let hooks: &[&str] = match direction {
            Direction::FromHost => &["ingress"],
            Direction::ToHost => &["egress"],
            Direction::Both => &["ingress", "egress"],
        };
        // nftables refuses `mod 100 < 100`: total loss is a plain drop.
        let rule = if percent == 100 {
            "drop".to_owned()
        } else {
            format!("numgen random mod 100 < {percent} drop")
        };
        let mut script = format!("table netdev {table} {{\n");
        for hook in hooks {
            script.push_str(&format!(
                "  chain {hook} {{ type filter hook {hook} device \"{port}\" priority 0; {rule}; }}\n"
            ));
        }
        script.push_str("}\n");
        nft_script(&self.switch, &script)
    }

    /// Turns the bridge of `segment` into a switch with MLD snooping: snooping and a querier
    /// on (answers asked within 1 s), so that it records per port the groups its hosts
    /// report ([`Lab::mdb_groups`]). Returns once the hosts had a query to answer.
    pub fn mld_snooping(&self, segment: &str) -> Result<()> {
        let bridge = format!("br-{segment}");
        let run = |program: &str, args: &[&str]| -> Result<()> {
            let output = self
                .command_in_switch(program)
                .args(args)
                .output()
                .with_context(|| format!("spawning {program}"))?;
            ensure!(
                output.status.success(),
                "{program} {args:?}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            Ok(())
        };
        // The response interval first: enabling the querier waits that long before the
        // bridge counts on its querier.
        run(
            "ip",
            &[
                "link",
                "set",
                &bridge,
                "type",
                "bridge",
                "mcast_snooping",
                "1",
                "mcast_query_response_interval",
                "100",
            ],
        )?;
        run(
            "ip",
            &[
                "link",
                "set",
                &bridge,
                "type",
                "bridge",
                "mcast_querier",
                "1",
            ],
        )?;
        // The querier's first general query and the members' reports.
        std::thread::sleep(Duration::from_millis(1500));
        Ok(())
    }

    /// The groups the bridge of `segment` has learnt for a host's port (`bridge mdb`).
    pub fn mdb_groups(&self, segment: &str, host: &str, interface: &str) -> Result<Vec<String>> {
        let port = self.port(host, interface)?;
        let output = self
            .command_in_switch("bridge")
            .args(["mdb", "show", "dev", &format!("br-{segment}")])
            .output()
            .context("spawning bridge mdb")?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == port))
            .filter_map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                let at = words.iter().position(|w| *w == "grp")?;
                words.get(at + 1).map(|g| (*g).to_owned())
            })
            .collect())
    }

    /// Loads an nftables script (`nft -f -`) in a host's namespace.
    pub fn nft(&self, host: &str, script: &str) -> Result<()> {
        nft_script(self.ns(host), script)
    }

    fn command_in_switch(&self, program: &str) -> Command {
        netns_command(&self.switch, program)
    }

    /// Joins two hosts with a direct veth pair (no bridge), `ifname` on both ends, addressed
    /// with `address_a`/`address_b`. Benchmarks use it so that native XDP can run on both ends.
    pub fn connect_direct(
        &mut self,
        host_a: &str,
        host_b: &str,
        ifname: &str,
        address_a: &str,
        address_b: &str,
    ) -> Result<()> {
        let (ns_a, ns_b) = (self.ns(host_a).to_owned(), self.ns(host_b).to_owned());
        ip(&[
            "link", "add", ifname, "netns", &ns_a, "type", "veth", "peer", "name", ifname, "netns",
            &ns_b,
        ])?;
        for (ns, address) in [(&ns_a, address_a), (&ns_b, address_b)] {
            ip(&["-n", ns, "addr", "add", address, "dev", ifname])?;
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
        }
        Ok(())
    }

    /// Packet counters of an interface: `(rx_packets, tx_packets)`.
    pub fn link_packets(&self, host: &str, interface: &str) -> Result<(u64, u64)> {
        let output = self.run(host, "ip", &["-s", "-j", "link", "show", "dev", interface])?;
        let json: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let stats = &json[0]["stats64"];
        let rx = stats["rx"]["packets"].as_u64().context("rx packets")?;
        let tx = stats["tx"]["packets"].as_u64().context("tx packets")?;
        Ok((rx, tx))
    }

    /// Namespace names of this lab (switch included).
    pub fn namespaces(&self) -> Vec<String> {
        let mut all: Vec<String> = self.namespaces.values().cloned().collect();
        all.push(self.switch.clone());
        all
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = remove_run(&self.prefix) {
            eprintln!("lab {}: cleanup failed: {e:#}", self.prefix);
        }
    }
}

/// Stops a process (SIGSTOP), as a hung daemon.
pub fn freeze(pid: u32) -> Result<()> {
    signal(pid, nix::sys::signal::Signal::SIGSTOP)
}

/// Continues a stopped process (SIGCONT).
pub fn thaw(pid: u32) -> Result<()> {
    signal(pid, nix::sys::signal::Signal::SIGCONT)
}

/// Kills a process (SIGKILL).
pub fn kill(pid: u32) -> Result<()> {
    signal(pid, nix::sys::signal::Signal::SIGKILL)
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) -> Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
        .with_context(|| format!("sending {signal} to {pid}"))
}

fn nft_script(ns: &str, script: &str) -> Result<()> {
    let mut child = netns_command(ns, "nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("spawning nft")?;
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())?;
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "nft failed: {}\n{script}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("spawning ip (iproute2)")?;
    if !output.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn add_netns(name: &str) -> Result<()> {
    ip(&["netns", "add", name])
}

fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    let key = key.to_owned();
    let value = value.to_owned();
    in_netns(ns, move || {
        fs::write(Path::new("/proc/sys").join(&key), &value)
            .with_context(|| format!("sysctl {key}={value}"))
    })?
}

/// Names of the lab namespaces that exist now.
pub fn existing_lab_namespaces() -> Vec<String> {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(LAB_PREFIX))
        .collect()
}

/// The run prefix (`fwl<pid>x<n>`) of a lab name, and the pid that made it.
fn run_of(name: &str) -> Option<(String, u32)> {
    let rest = name.strip_prefix(LAB_PREFIX)?;
    let (pid, rest) = rest.split_once('x')?;
    let counter: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let pid = pid.parse().ok()?;
    Some((format!("{LAB_PREFIX}{pid}x{counter}"), pid))
}

fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes everything of runs whose process is gone (crashed or killed tests).
pub fn remove_stale() -> Result<()> {
    let mut stale: Vec<String> = existing_lab_namespaces()
        .iter()
        .chain(
            fs::read_dir(BPFFS)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .iter(),
        )
        .filter_map(|n| run_of(n))
        .filter(|(_, pid)| !process_alive(*pid))
        .map(|(prefix, _)| prefix)
        .collect();
    stale.sort();
    stale.dedup();
    for prefix in stale {
        remove_run(&prefix)?;
    }
    freezer::remove_stale()
}

/// Removes the namespaces (after killing what runs in them) and the pins of one run.
fn remove_run(prefix: &str) -> Result<()> {
    let owned: Vec<String> = existing_lab_namespaces()
        .into_iter()
        .filter(|n| n.strip_prefix(prefix).is_some_and(|r| r.starts_with('-')))
        .collect();
    for ns in &owned {
        kill_processes_in(ns);
    }
    let mut errors = Vec::new();
    for ns in &owned {
        // Another lab of this process may be removing the same stale run concurrently.
        if let Err(e) = ip(&["netns", "del", ns])
            && Path::new(NETNS_DIR).join(ns).exists()
        {
            errors.push(format!("{e:#}"));
        }
    }
    let pins = Path::new(BPFFS).join(prefix);
    if let Err(e) = fs::remove_dir_all(&pins)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        errors.push(format!("removing {}: {e}", pins.display()));
    }
    ensure!(errors.is_empty(), "{}", errors.join("; "));
    Ok(())
}

fn kill_processes_in(ns: &str) {
    let Ok(output) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_prefix_is_parsed_from_names() {
        assert_eq!(
            run_of("fwl1234x7-fws1"),
            Some(("fwl1234x7".to_owned(), 1234))
        );
        assert_eq!(run_of("fwl1234x7"), Some(("fwl1234x7".to_owned(), 1234)));
        assert_eq!(run_of("other"), None);
        assert_eq!(run_of("fwlabc"), None);
    }
}
