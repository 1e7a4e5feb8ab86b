//! `clpcfg check|show|keygen|init|nft|uninstall|restart|stop`: the configuration tool (R-CFG-1)
//! and the package's daemon handling.

use std::{
    io::{BufRead, Write},
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use ipnet::{IpNet, Ipv4Net};

use crate::config::{
    ClusterConfig, ClusterRecover, Config, ExecConfig, Failback, FipConfig, GroupConfig, IpwConfig,
    MailConfig, ParpConfig, Recover, ServerConfig, StartMode, XdpModeConfig,
};

#[derive(Parser, Debug)]
#[command(
    name = "clpcfg",
    version,
    about = "Check, show and create fwcluster configurations"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Validate a configuration file (exit status 0 when valid).
    Check {
        file: PathBuf,
        /// Also check the addresses against this host's interfaces, as node NAME
        /// (default: $FWCLUSTER_NODE or the short host name).
        #[arg(long)]
        local: bool,
        #[arg(long)]
        node: Option<String>,
    },
    /// Print the configuration with every default filled in.
    Show { file: PathBuf },
    /// Write a new random cluster key (mode 0600).
    Keygen {
        file: PathBuf,
        /// Replace an existing key file.
        #[arg(long)]
        force: bool,
    },
    /// Ask for the configuration interactively, in the seed's style, and write it.
    Init {
        #[arg(long, short, default_value = "cluster.toml")]
        output: PathBuf,
    },
    /// Print the cluster's nftables chains to include inside your own inet table: cluster
    /// traffic (heartbeats, peer API, session sync) between the servers only, the stealth rule,
    /// and hide and static NAT per group. Hook them in with `include` and `jump` (see README).
    Nft { file: PathBuf },
    /// Detach the XDP program from every interface and remove this node's pinned program, maps
    /// and links (a stopped fwclusterd leaves them, so that a restart adopts them). Refused
    /// while fwclusterd runs on this node.
    Uninstall {
        /// The cluster configuration (for the cluster's name).
        #[arg(long, short)]
        config: PathBuf,
        /// This node's name (default: $FWCLUSTER_NODE, else the short host name).
        #[arg(long)]
        node: Option<String>,
        /// Where bpffs pins go (`<pin-root>/<cluster>/<node>`), as given to fwclusterd.
        #[arg(long, default_value = "/sys/fs/bpf")]
        pin_root: PathBuf,
        /// Directory of the control socket, as given to fwclusterd.
        #[arg(long, default_value = "/run/fwcluster")]
        run_dir: PathBuf,
    },
    /// Restart fwclusterd in place, moving nothing (after an upgrade: the new version runs).
    /// The daemon asks its peers for a restart hold (`[cluster] restart_hold`), exits once
    /// they granted it, and runs again in the same process; its data path answers throughout
    /// and the new daemon adopts the groups. Without --config: every fwclusterd running on
    /// this machine. Refused (the daemon runs on) while a node of a group's policy is offline.
    Restart {
        /// The cluster configuration of the one daemon to restart.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// That daemon's node name (default: $FWCLUSTER_NODE, else the short host name).
        #[arg(long, requires = "config")]
        node: Option<String>,
        /// Directory of its control socket, as given to fwclusterd.
        #[arg(long, default_value = "/run/fwcluster", requires = "config")]
        run_dir: PathBuf,
    },
    /// Stop every fwclusterd running on this machine as `systemctl stop` does (SIGTERM: the
    /// groups are handed over, DEACT_NORMAL) and wait for each to end.
    Stop {
        /// Then remove each stopped node's data path (as `clpcfg uninstall`).
        #[arg(long)]
        uninstall: bool,
        /// How long each may take to hand its groups over.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

fn load(file: &Path) -> Result<Config> {
    Config::load(file).map_err(|e| anyhow::anyhow!("{e}"))
}

pub fn main(args: Args) -> Result<()> {
    match args.command {
        Cmd::Check { file, local, node } => {
            let config = load(&file)?;
            if local {
                let (me, name) = config.resolve_node(node.as_deref())?;
                let interfaces = crate::netif::interface_addresses()?;
                let problems = crate::config::check_against_interfaces(&config, me, &interfaces);
                if !problems.is_empty() {
                    bail!(
                        "{}: does not fit node {name}:\n  {}",
                        file.display(),
                        problems.join("\n  ")
                    );
                }
            }
            println!("{}: OK", file.display());
            Ok(())
        }
        Cmd::Show { file } => {
            print!("{}", load(&file)?.normalized());
            Ok(())
        }
        Cmd::Keygen { file, force } => keygen(&file, force),
        Cmd::Init { output } => {
            let stdin = std::io::stdin();
            let config = Wizard::new(stdin.lock(), std::io::stdout()).run()?;
            write_config(&output, &config)?;
            println!("written to {}", output.display());
            Ok(())
        }
        Cmd::Nft { file } => {
            print!("{}", crate::nft::fragment(&load(&file)?));
            Ok(())
        }
        Cmd::Uninstall {
            config,
            node,
            pin_root,
            run_dir,
        } => uninstall(&load(&config)?, node.as_deref(), &pin_root, &run_dir),
        Cmd::Restart {
            config,
            node,
            run_dir,
        } => restart(config.as_deref(), node.as_deref(), &run_dir),
        Cmd::Stop { uninstall, timeout } => stop_all(uninstall, timeout),
    }
}

fn restart(config_path: Option<&Path>, node: Option<&str>, run_dir: &Path) -> Result<()> {
    use crate::cli::daemons;
    let targets = match config_path {
        Some(path) => {
            let config = load(path)?;
            let (_, node) = config.resolve_node(node)?;
            vec![daemons::Running {
                pid: 0,
                config_path: path.to_owned(),
                node,
                pin_root: PathBuf::from("/sys/fs/bpf"),
                run_dir: run_dir.to_owned(),
                config,
                netns: None,
            }]
        }
        None => daemons::running(),
    };
    if targets.is_empty() {
        println!("no fwclusterd runs on this machine");
        return Ok(());
    }
    let mut failed = Vec::new();
    for daemon in &targets {
        match daemons::restart(daemon) {
            Ok(done) => println!("{done}"),
            Err(e) => {
                eprintln!("clpcfg: {e:#}");
                failed.push(daemon.node.clone());
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "not restarted: {} (each runs on as before)",
            failed.join(", ")
        );
    }
    Ok(())
}

fn stop_all(remove: bool, timeout: Duration) -> Result<()> {
    use crate::cli::daemons;
    let targets = daemons::running();
    if targets.is_empty() {
        println!("no fwclusterd runs on this machine");
    }
    let mut failed = Vec::new();
    for daemon in &targets {
        let stopped = daemons::stop(daemon, timeout).and_then(|()| {
            println!("{}: stopped (groups handed over)", daemon.node);
            if remove {
                daemon.in_netns(|| {
                    uninstall(
                        &daemon.config,
                        Some(&daemon.node),
                        &daemon.pin_root,
                        &daemon.run_dir,
                    )
                })?;
            }
            Ok(())
        });
        if let Err(e) = stopped {
            eprintln!("clpcfg: {e:#}");
            failed.push(daemon.node.clone());
        }
    }
    if !failed.is_empty() {
        bail!("not stopped: {}", failed.join(", "));
    }
    Ok(())
}

/// Removes this node's pins; the kernel detaches each link when its pin goes and frees the
/// maps and the program with the last reference. Works on pins of any earlier build too, as it
/// does not open them.
fn uninstall(config: &Config, node: Option<&str>, pin_root: &Path, run_dir: &Path) -> Result<()> {
    let (_, node) = config.resolve_node(node)?;
    let socket = crate::control::socket_path(run_dir, &node);
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        bail!(
            "fwclusterd is running on node {node} (it answers on {}); stop it first",
            socket.display()
        );
    }
    let dir = pin_root.join(&config.cluster.name).join(&node);
    let pins: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("nothing installed in {}", dir.display());
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    crate::dataplane::remove_pins(&dir)?;
    println!(
        "removed {} pins from {} ({}); the XDP program is detached",
        pins.len(),
        dir.display(),
        pins.join(", ")
    );
    // The addresses are no longer the cluster's: the kernel may answer for them again.
    crate::arp_guard::remove(&config.cluster.name)?;
    println!(
        "removed the ARP guard (nftables table arp {})",
        crate::arp_guard::table_name(&config.cluster.name)
    );
    Ok(())
}

/// Writes a new key: 32 random bytes as hex, readable by root only.
pub fn keygen(file: &Path, force: bool) -> Result<()> {
    let mut key = [0u8; 32];
    getrandom_bytes(&mut key)?;
    if file.exists() && !force {
        anyhow::bail!("{} exists (use --force to replace the key)", file.display());
    }
    // Written to a new file (O_EXCL, mode 0600 from the start) and renamed over the old key:
    // a replaced key never keeps the old file's mode, and no reader sees half a key.
    let name = file
        .file_name()
        .with_context(|| format!("{} is not a file name", file.display()))?;
    let temporary = file.with_file_name(format!(
        ".{}.new-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    writeln!(out, "{}", hex::encode(key))?;
    out.sync_all()?;
    std::fs::rename(&temporary, file).with_context(|| format!("replacing {}", file.display()))?;
    println!(
        "{}: new cluster key written (mode 0600); copy it to every node",
        file.display()
    );
    Ok(())
}

fn getrandom_bytes(buffer: &mut [u8]) -> Result<()> {
    use rand::TryRngCore as _;
    rand::rngs::OsRng
        .try_fill_bytes(buffer)
        .context("reading random bytes")
}

fn write_config(path: &Path, config: &Config) -> Result<()> {
    let text = format!(
        "# fwcluster configuration written by clpcfg init; install it on every node.\n{}",
        config.normalized()
    );
    // Validate what we write, with the same rules as `clpcfg check`.
    Config::parse(path, &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// An address with its prefix from the next words: `192.0.2.10/24` or `2001:db8::10/64`, or
/// `192.0.2.10 255.255.255.0` as the seed's dialog takes it.
fn address_and_prefix<'a>(words: &mut impl Iterator<Item = &'a str>) -> Result<IpNet> {
    let first = words.next().context("an address is required")?;
    if first.contains('/') {
        return first.parse().with_context(|| format!("{first:?}"));
    }
    if first.contains(':') {
        bail!("{first:?} needs its prefix length (e.g. {first}/64)");
    }
    let address: Ipv4Addr = first.parse().with_context(|| format!("{first:?}"))?;
    let mask_text = words
        .next()
        .with_context(|| format!("{first:?} needs a prefix (/24) or a netmask (255.255.255.0)"))?;
    let mask: Ipv4Addr = mask_text
        .parse()
        .with_context(|| format!("netmask {mask_text:?}"))?;
    let bits = u32::from(mask);
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        bail!("netmask {mask_text:?} is not contiguous");
    }
    Ok(IpNet::V4(Ipv4Net::new(address, bits.leading_ones() as u8)?))
}

/// The firewall health monitor every generated group runs (config/scripts/ckfwalive, installed
/// under /usr/lib/fwcluster).
fn ckfwalive() -> ExecConfig {
    ExecConfig {
        name: "ckfwalive".into(),
        start: "/usr/lib/fwcluster/ckfwalive".into(),
        stop: "/usr/lib/fwcluster/ckfwalive -k".into(),
        monitor: true,
        timeout: Duration::from_secs(30),
        retry: 2,
        recover: Recover::Failover,
    }
}

/// The interactive configuration dialogue (the seed's `fwsetup` style): one question per line
/// with the default in brackets; lists are edited with a (add), m (modify), d (delete),
/// l (list) and Enter (done). Reads any `BufRead`, so it also takes piped answers.
pub struct Wizard<R, W> {
    input: R,
    output: W,
}

impl<R: BufRead, W: Write> Wizard<R, W> {
    pub fn new(input: R, output: W) -> Self {
        Self { input, output }
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.input.read_line(&mut line)? == 0 {
            bail!("input ended before the configuration was complete");
        }
        Ok(line.trim().to_owned())
    }

    fn ask(&mut self, question: &str, default: Option<&str>) -> Result<String> {
        loop {
            match default {
                Some(d) => write!(self.output, "{question} [{d}] : ")?,
                None => write!(self.output, "{question} : ")?,
            }
            self.output.flush()?;
            let answer = self.line()?;
            match (answer.is_empty(), default) {
                (true, Some(d)) => return Ok(d.to_owned()),
                (true, None) => writeln!(self.output, "  an answer is required")?,
                (false, _) => return Ok(answer),
            }
        }
    }

    fn ask_parsed<T: std::str::FromStr>(
        &mut self,
        question: &str,
        default: Option<&str>,
    ) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        loop {
            let answer = self.ask(question, default)?;
            match answer.parse() {
                Ok(v) => return Ok(v),
                Err(e) => writeln!(self.output, "  {answer:?}: {e}")?,
            }
        }
    }

    /// A duration longer than `above` (the interval for the timeout, the timeout for the wait,
    /// as the configuration requires), asked again until it is one.
    fn ask_duration(&mut self, question: &str, default: &str, above: Duration) -> Result<Duration> {
        loop {
            let answer = self.ask(question, Some(default))?;
            match humantime::parse_duration(&answer) {
                Ok(d) if d < Duration::from_millis(1) => {
                    writeln!(self.output, "  {answer:?}: at least 1ms")?
                }
                Ok(d) if d <= above => writeln!(
                    self.output,
                    "  {answer:?}: must be longer than {}",
                    humantime::format_duration(above)
                )?,
                Ok(d) => return Ok(d),
                Err(e) => writeln!(self.output, "  {answer:?}: {e} (e.g. 1s, 500ms)")?,
            }
        }
    }

    fn yes(&mut self, question: &str, default: bool) -> Result<bool> {
        loop {
            let answer = self.ask(
                &format!("{question} (y/n)"),
                Some(if default { "y" } else { "n" }),
            )?;
            match answer.as_str() {
                "y" | "Y" | "yes" => return Ok(true),
                "n" | "N" | "no" => return Ok(false),
                _ => writeln!(self.output, "  answer y or n")?,
            }
        }
    }

    /// Edits a list of entries, each parsed by `parse`.
    fn list<T: Clone>(
        &mut self,
        title: &str,
        entry: &str,
        mut parse: impl FnMut(&str) -> Result<T>,
        show: impl Fn(&T) -> String,
        max: usize,
    ) -> Result<Vec<T>> {
        let mut items: Vec<T> = Vec::new();
        writeln!(self.output, "---- {title} ----")?;
        writeln!(
            self.output,
            "  a: add  m: modify  d: delete  l: list  Enter: done"
        )?;
        loop {
            write!(self.output, "[a/m/d/l/Enter] : ")?;
            self.output.flush()?;
            let line = self.line()?;
            // `m 2` / `d 2` as well as `m` and then the number, as in the seed's dialog.
            let (command, number) = match line.split_once(char::is_whitespace) {
                Some((command, number)) => (command.to_owned(), Some(number.trim().to_owned())),
                None => (line.clone(), None),
            };
            match command.as_str() {
                "" => return Ok(items),
                "a" | "A" => {
                    if items.len() >= max {
                        writeln!(self.output, "  at most {max} entries")?;
                        continue;
                    }
                    let text = self.ask(&format!("Input {entry}"), None)?;
                    match parse(&text) {
                        Ok(item) => items.push(item),
                        Err(e) => writeln!(self.output, "  {e:#}")?,
                    }
                }
                "m" | "M" | "d" | "D" => {
                    let index: usize = match number.map(|n| n.parse::<usize>()) {
                        Some(Ok(index)) => index,
                        Some(Err(e)) => {
                            writeln!(self.output, "  {line:?}: {e}")?;
                            continue;
                        }
                        None => self.ask_parsed("Input the number", None)?,
                    };
                    if index == 0 || index > items.len() {
                        writeln!(self.output, "  no entry {index}")?;
                        continue;
                    }
                    if command.eq_ignore_ascii_case("d") {
                        items.remove(index - 1);
                    } else {
                        let text = self.ask(&format!("Input {entry}"), None)?;
                        match parse(&text) {
                            Ok(item) => items[index - 1] = item,
                            Err(e) => writeln!(self.output, "  {e:#}")?,
                        }
                    }
                }
                "l" | "L" => {
                    for (i, item) in items.iter().enumerate() {
                        writeln!(self.output, "  {}: {}", i + 1, show(item))?;
                    }
                }
                other => writeln!(self.output, "  unknown command {other:?}")?,
            }
        }
    }

    fn group(&mut self, name: &str, servers: &[String], primary: &str) -> Result<GroupConfig> {
        writeln!(self.output, "---- {name} ----")?;
        let primary = loop {
            let answer = self.ask(&format!("Input the active server of {name}"), Some(primary))?;
            if servers.contains(&answer) {
                break answer;
            }
            writeln!(
                self.output,
                "  {answer:?} is not one of {}",
                servers.join(", ")
            )?;
        };
        let mut policy = vec![primary.clone()];
        policy.extend(servers.iter().filter(|s| **s != primary).cloned());
        let failback = if self.yes("auto failback?", false)? {
            Failback::Auto
        } else {
            Failback::Manual
        };
        let fip = self.list(
            &format!("floating IP addresses of {name}"),
            "address/prefix, interface and the sources it hides (e.g. 192.0.2.10/24 eth0 hide 203.0.113.0/25)",
            |text| {
                let mut parts = text.split_whitespace();
                let address = address_and_prefix(&mut parts)?;
                let interface = parts.next().map(str::to_owned);
                let hide = match parts.next() {
                    None => Vec::new(),
                    Some("hide") => {
                        let sources: Vec<Ipv4Net> = parts
                            .by_ref()
                            .flat_map(|p| p.split(','))
                            .filter(|p| !p.is_empty())
                            .map(|p| p.parse().with_context(|| format!("hide source {p:?}")))
                            .collect::<Result<_>>()?;
                        if sources.is_empty() {
                            bail!("hide names no source network");
                        }
                        sources
                    }
                    Some(other) => bail!("{other:?}: expected `hide` and source networks"),
                };
                if !hide.is_empty() && interface.is_none() {
                    bail!("hide NAT needs the interface");
                }
                Ok(FipConfig {
                    address,
                    interface,
                    arp_count: 1,
                    ping_count: 0,
                    arp_refresh: Duration::ZERO,
                    recover: Recover::Retry,
                    retry: 5,
                    hide,
                    router: true,
                })
            },
            |f: &FipConfig| {
                let mut shown = format!("{} {}", f.address, f.interface.clone().unwrap_or_default());
                if !f.hide.is_empty() {
                    let sources: Vec<String> = f.hide.iter().map(Ipv4Net::to_string).collect();
                    shown.push_str(&format!(" hide {}", sources.join(",")));
                }
                shown
            },
            8,
        )?;
        let ipw = self.list(
            &format!("IP watch targets of {name}"),
            "target address(es), alternatives separated by | (e.g. 192.0.2.254 | 192.0.2.253)",
            |text| {
                let targets = text
                    .split('|')
                    .map(|t| t.trim().parse::<IpAddr>().with_context(|| format!("{t:?}")))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(IpwConfig {
                    targets,
                    interval: Duration::from_secs(1),
                    timeout: Duration::from_secs(3),
                    retry: 2,
                    recover: Recover::Failover,
                })
            },
            |i: &IpwConfig| {
                i.targets
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" | ")
            },
            8,
        )?;
        let parp = self.list(
            &format!("proxy ARP addresses of {name}"),
            "address, interface and the inner host it stands for (e.g. 192.0.2.20 eth0 nat 198.51.100.100)",
            |text| {
                let mut parts = text.split_whitespace();
                let address: IpAddr = parts.next().context("an address is required")?.parse()?;
                let interface = parts.next().context("an interface is required")?.to_owned();
                let static_nat = match (parts.next(), parts.next()) {
                    (None, _) => None,
                    (Some("nat"), Some(inner)) => Some(
                        inner
                            .parse()
                            .with_context(|| format!("static NAT host {inner:?}"))?,
                    ),
                    (Some(other), _) => bail!("{other:?}: expected `nat` and the inner host's address"),
                };
                Ok(ParpConfig {
                    address,
                    interface,
                    mac: None,
                    arp_count: 1,
                    recover: Recover::Retry,
                    retry: 5,
                    static_nat,
                    router: false,
                })
            },
            |p: &ParpConfig| match p.static_nat {
                Some(inner) => format!("{} {} nat {inner}", p.address, p.interface),
                None => format!("{} {}", p.address, p.interface),
            },
            256,
        )?;
        // The seed's ckfwalive (R-FW-6): the firewall's own health as a monitored resource, so
        // that a firewall that stopped filtering hands its groups over and is denied them.
        let exec = if self.yes(
            "monitor the firewall with ckfwalive (ruleset loaded, conntrack reachable)?",
            true,
        )? {
            vec![ckfwalive()]
        } else {
            Vec::new()
        };
        Ok(GroupConfig {
            name: name.to_owned(),
            policy,
            failback,
            start: StartMode::Auto,
            fip,
            parp,
            ipw,
            exec,
        })
    }

    /// Runs the dialogue and returns the configuration.
    pub fn run(mut self) -> Result<Config> {
        writeln!(self.output, "---- START fwcluster configuration ----")?;
        // The seed's dialog asks for the mode first.
        let load_share = self.yes("use load share?", false)?;
        let name = loop {
            let name = self.ask("Input cluster name", Some("fws_cluster"))?;
            match crate::config::name_problem(&name) {
                None => break name,
                Some(problem) => writeln!(self.output, "  {problem}")?,
            }
        };
        let heartbeat_interval = self.ask_duration("Input HB interval", "1s", Duration::ZERO)?;
        let heartbeat_timeout = self.ask_duration("Input HB timeout", "5s", heartbeat_interval)?;
        let wait_timeout = self.ask_duration("Input WAIT timeout", "10s", heartbeat_timeout)?;
        let api_port: u16 = self.ask_parsed("Input API TCP port number", Some("28001"))?;
        let heartbeat_port: u16 = self.ask_parsed("Input HB UDP port number", Some("28002"))?;
        let key_file =
            PathBuf::from(self.ask("Input key file", Some("/etc/fwcluster/cluster.key"))?);
        let mut server = Vec::new();
        for n in 1..=2 {
            let host = loop {
                let host = self.ask(&format!("Input server{n} host name"), None)?;
                match crate::config::host_name_problem(&host) {
                    None if server.iter().any(|s: &ServerConfig| s.name == host) => {
                        writeln!(self.output, "  {host:?} is already server1")?
                    }
                    None => break host,
                    Some(problem) => writeln!(self.output, "  {problem}")?,
                }
            };
            let interconnect = self.list(
                &format!("interconnect addresses of {host}"),
                "address/prefix or address and netmask (e.g. 169.254.12.1/24, 169.254.12.1 255.255.255.0 or fd12::1/64)",
                |text| {
                    let mut words = text.split_whitespace();
                    let net = address_and_prefix(&mut words)?;
                    if let Some(extra) = words.next() {
                        bail!("{extra:?}: nothing follows the address");
                    }
                    Ok(net)
                },
                |n: &IpNet| n.to_string(),
                crate::config::MAX_INTERCONNECTS,
            )?;
            server.push(ServerConfig {
                name: host,
                interconnect,
            });
        }
        let names: Vec<String> = server.iter().map(|s| s.name.clone()).collect();
        let mut group = vec![self.group("group0", &names, &names[0])?];
        if load_share {
            group.push(self.group("group1", &names, &names[1])?);
        }
        let to = self.ask(
            "Input the administrator's mail address (Enter: no mail)",
            Some(""),
        )?;
        let mail = if to.is_empty() {
            None
        } else {
            let smtp = self.ask("Input the SMTP server", Some("smtp://127.0.0.1:25"))?;
            let from = self.ask(
                "Input the sender address",
                Some(&format!("cluster@{}", names[0])),
            )?;
            Some(MailConfig {
                smtp,
                from,
                to: vec![to],
                username: None,
                password_file: None,
                outbox: PathBuf::from("/var/lib/fwcluster/outbox"),
            })
        };
        writeln!(self.output, "---- END fwcluster configuration ----")?;
        Ok(Config {
            cluster: ClusterConfig {
                name,
                heartbeat_interval,
                heartbeat_timeout,
                wait_timeout,
                api_port,
                heartbeat_port,
                api_timeout: Duration::from_secs(30),
                key_file,
                recover: ClusterRecover::Restart,
                retry: 5,
                tiebreakers: Vec::new(),
                xdp_mode: XdpModeConfig::Auto,
                realtime_priority: 0,
                restart_hold: Duration::from_secs(5),
            },
            mail,
            metrics: None,
            server,
            group,
            flowshare: Vec::new(),
            sync: None,
        })
    }
}
