//! `clpcfg check|show|keygen|init|nft|uninstall`: the configuration tool (R-CFG-1).

use std::{
    io::{BufRead, Write},
    net::Ipv4Addr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use ipnet::Ipv4Net;

use crate::config::{
    ClusterConfig, ClusterRecover, Config, Failback, FipConfig, GroupConfig, IpwConfig, MailConfig,
    ParpConfig, Recover, ServerConfig, StartMode, XdpModeConfig,
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
    /// Print an nftables snippet that accepts the cluster's heartbeat and API traffic between
    /// the nodes only.
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
            print!("{}", nft_snippet(&load(&file)?));
            Ok(())
        }
        Cmd::Uninstall {
            config,
            node,
            pin_root,
            run_dir,
        } => uninstall(&load(&config)?, node.as_deref(), &pin_root, &run_dir),
    }
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

/// The nftables rules for the cluster's own traffic.
pub fn nft_snippet(config: &Config) -> String {
    let addresses: Vec<String> = config
        .server
        .iter()
        .flat_map(|s| s.interconnect.iter().map(|n| n.addr().to_string()))
        .collect();
    let set = addresses.join(", ");
    let hb = config.cluster.heartbeat_port;
    let api = config.cluster.api_port;
    format!(
        "# fwcluster: heartbeats (UDP {hb}) and the peer API (TCP {api}) between the nodes only.\n\
         table inet fwcluster {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter - 10; policy accept;\n\
         \t\tip saddr {{ {set} }} ip daddr {{ {set} }} udp dport {hb} accept\n\
         \t\tip saddr {{ {set} }} ip daddr {{ {set} }} tcp dport {api} accept\n\
         \t\tudp dport {hb} drop\n\
         \t\ttcp dport {api} drop\n\
         \t}}\n\
         }}\n"
    )
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

    fn ask_duration(&mut self, question: &str, default: &str) -> Result<Duration> {
        loop {
            let answer = self.ask(question, Some(default))?;
            match humantime::parse_duration(&answer) {
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
            let command = self.line()?;
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
                    let index: usize = self.ask_parsed("Input the number", None)?;
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
            "address/prefix and interface (e.g. 192.0.2.10/24 eth0)",
            |text| {
                let mut parts = text.split_whitespace();
                let address: Ipv4Net = parts.next().context("an address is required")?.parse()?;
                Ok(FipConfig {
                    address,
                    interface: parts.next().map(str::to_owned),
                    arp_count: 1,
                    ping_count: 0,
                    arp_refresh: Duration::ZERO,
                    recover: Recover::Retry,
                    retry: 5,
                })
            },
            |f: &FipConfig| format!("{} {}", f.address, f.interface.clone().unwrap_or_default()),
            8,
        )?;
        let ipw = self.list(
            &format!("IP watch targets of {name}"),
            "target address(es), alternatives separated by | (e.g. 192.0.2.254 | 192.0.2.253)",
            |text| {
                let targets = text
                    .split('|')
                    .map(|t| {
                        t.trim()
                            .parse::<Ipv4Addr>()
                            .with_context(|| format!("{t:?}"))
                    })
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
            "address and interface (e.g. 192.0.2.20 eth0)",
            |text| {
                let mut parts = text.split_whitespace();
                let address: Ipv4Addr = parts.next().context("an address is required")?.parse()?;
                let interface = parts.next().context("an interface is required")?.to_owned();
                Ok(ParpConfig {
                    address,
                    interface,
                    mac: None,
                    arp_count: 1,
                    recover: Recover::Retry,
                    retry: 5,
                })
            },
            |p: &ParpConfig| format!("{} {}", p.address, p.interface),
            256,
        )?;
        Ok(GroupConfig {
            name: name.to_owned(),
            policy,
            failback,
            start: StartMode::Auto,
            fip,
            parp,
            ipw,
            exec: Vec::new(),
        })
    }

    /// Runs the dialogue and returns the configuration.
    pub fn run(mut self) -> Result<Config> {
        writeln!(self.output, "---- START fwcluster configuration ----")?;
        let name = self.ask("Input cluster name", Some("fws_cluster"))?;
        let heartbeat_interval = self.ask_duration("Input HB interval", "1s")?;
        let heartbeat_timeout = self.ask_duration("Input HB timeout", "5s")?;
        let wait_timeout = self.ask_duration("Input WAIT timeout", "10s")?;
        let api_port: u16 = self.ask_parsed("Input API TCP port number", Some("28001"))?;
        let heartbeat_port: u16 = self.ask_parsed("Input HB UDP port number", Some("28002"))?;
        let key_file =
            PathBuf::from(self.ask("Input key file", Some("/etc/fwcluster/cluster.key"))?);
        let mut server = Vec::new();
        for n in 1..=2 {
            let host = self.ask(&format!("Input server{n} host name"), None)?;
            let interconnect = self.list(
                &format!("interconnect addresses of {host}"),
                "address/prefix (e.g. 169.254.12.1/24)",
                |text| text.parse::<Ipv4Net>().with_context(|| format!("{text:?}")),
                |n: &Ipv4Net| n.to_string(),
                crate::config::MAX_INTERCONNECTS,
            )?;
            server.push(ServerConfig {
                name: host,
                interconnect,
            });
        }
        let names: Vec<String> = server.iter().map(|s| s.name.clone()).collect();
        let load_share = self.yes("use load share?", false)?;
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
            },
            mail,
            metrics: None,
            server,
            group,
            flowshare: Vec::new(),
        })
    }
}
