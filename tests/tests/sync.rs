//! Session synchronization (SPEC §10), the replication underneath: conntrackd on both firewalls,
//! with the configuration fwcluster generates, copies connection-tracking entries from one
//! node's kernel table to the other's external cache over the sync interconnect, and a commit
//! puts them into that node's kernel table.

use std::{
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use cluster_ctl::{
    config::Config,
    sync::{PeerState, conntrackd_conf},
};
use fwcluster_lab::{
    Lab,
    seed::{self, FWS1, FWS2, IC_IF},
    sessions::exchange,
};

/// conntrackd of one firewall, stopped when dropped.
struct Conntrackd {
    child: Child,
}

impl Drop for Conntrackd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(lab: &Lab, host: &str, conf: &Path) -> Result<Conntrackd> {
    let child = lab
        .command(host, "conntrackd")
        .arg("-C")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting conntrackd (cargo xtask setup installs it)")?;
    Ok(Conntrackd { child })
}

fn run(lab: &Lab, host: &str, program: &str, args: &[&str]) -> Result<String> {
    let output = lab.run(host, program, args)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done()? {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(false)
}

#[test]
fn conntrackd_with_the_generated_configuration_replicates_entries_and_commits_them() -> Result<()> {
    let lab = seed::build()?;
    let dir = tempfile::tempdir()?;
    let config = Config::parse(
        Path::new("cluster.toml"),
        &format!(
            "[cluster]\nname = \"{}\"\n{}\n[sync]\ninterconnect = 0\n",
            lab.prefix(),
            fwcluster_lab::seed_servers!()
        ),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut daemons = Vec::new();
    let mut confs = Vec::new();
    for (node, host) in [FWS1, FWS2].into_iter().enumerate() {
        let conf = dir.path().join(format!("conntrackd-{host}.conf"));
        std::fs::write(
            &conf,
            conntrackd_conf(&config, node, IC_IF, dir.path(), PeerState::ExternalCache)?,
        )?;
        daemons.push(start(&lab, host, &conf)?);
        confs.push(conf);
    }
    for host in [FWS1, FWS2] {
        let socket = dir.path().join(format!("conntrackd-{host}.ctl"));
        ensure!(
            wait_until(Duration::from_secs(5), || Ok(socket.exists()))?,
            "conntrackd on {host} did not start: {}",
            std::fs::read_to_string(dir.path().join(format!("conntrackd-{host}.log")))
                .unwrap_or_default()
        );
    }
    // A connection through fws1, NAT'd as hide NAT would: in its kernel table.
    run(
        &lab,
        FWS1,
        "conntrack",
        &[
            "-I",
            "-p",
            "tcp",
            "-s",
            "203.0.113.101",
            "-d",
            "192.0.2.100",
            "--sport",
            "40000",
            "--dport",
            "8080",
            "--state",
            "ESTABLISHED",
            "-t",
            "300",
            "-u",
            "SEEN_REPLY,ASSURED",
            "--reply-src",
            "192.0.2.100",
            "--reply-dst",
            "192.0.2.10",
            "--reply-port-src",
            "8080",
            "--reply-port-dst",
            "40000",
        ],
    )?;
    let fws2_conf = confs[1].to_str().context("path")?;
    let replicated = wait_until(Duration::from_secs(5), || {
        Ok(run(&lab, FWS2, "conntrackd", &["-C", fws2_conf, "-e"])?.contains("203.0.113.101"))
    })?;
    ensure!(
        replicated,
        "fws2's external cache lacks the entry: {}",
        run(&lab, FWS2, "conntrackd", &["-C", fws2_conf, "-e"])?
    );
    // Not in fws2's kernel table until committed; then there, NAT binding included.
    let listed = |host| run(&lab, host, "conntrack", &["-L", "-p", "tcp"]);
    ensure!(
        !listed(FWS2)?.contains("203.0.113.101"),
        "{}",
        listed(FWS2)?
    );
    run(&lab, FWS2, "conntrackd", &["-C", fws2_conf, "-c"])?;
    let committed = listed(FWS2)?;
    ensure!(
        committed.contains("src=203.0.113.101")
            && committed.contains("dst=192.0.2.10")
            && committed.contains("ESTABLISHED"),
        "{committed}"
    );
    drop(daemons);
    Ok(())
}

const TIMING: &str = r#"heartbeat_interval = "10ms"
heartbeat_timeout = "30ms"
wait_timeout = "3s"
"#;

const GROUP0: &str = fwcluster_lab::sessions::GROUP0_HIDE_NAT;

/// The cluster of `body` on both firewalls of `lab`, each running the example firewall with
/// strict TCP tracking (a node does not pick up a connection it has no entry for), group0 on
/// fws1 and then fws2 joining (with `sync`, it waits `sync.wait` for fws1's entries before
/// it takes part), and with `sync` both conntrackd running.
fn started(lab: &Lab, body: &str, sync: bool) -> Result<fwcluster_lab::cluster::Cluster> {
    started_with(lab, body, sync, &[])
}

/// [`started`], with more netfilter `settings` (`name=value`) on both firewalls.
fn started_with(
    lab: &Lab,
    body: &str,
    sync: bool,
    settings: &[&str],
) -> Result<fwcluster_lab::cluster::Cluster> {
    let mut cluster = fwcluster_lab::cluster::Cluster::new(lab, body)?;
    for host in [FWS1, FWS2] {
        fwcluster_lab::firewall::load_example(lab, &cluster, host)?;
        for setting in ["net.netfilter.nf_conntrack_tcp_loose=0"]
            .iter()
            .chain(settings)
        {
            lab.run(host, "sysctl", &["-qw", setting])?;
        }
    }
    cluster.start(lab, FWS1)?;
    cluster.wait_for(
        FWS1,
        "FWC201",
        "group0 is active on fws1",
        Duration::from_secs(6),
    )?;
    cluster.start(lab, FWS2)?;
    cluster.wait_for(FWS2, "FWC101", "fws1 is ONLINE", Duration::from_secs(3))?;
    if sync {
        for host in [FWS1, FWS2] {
            cluster.wait_for(host, "FWC601", "conntrackd started", Duration::from_secs(3))?;
        }
    }
    Ok(cluster)
}

/// A TCP connection from the intranet client to the internet server through group0's hide NAT:
/// (client end, server end).
fn connection(lab: &Lab) -> Result<(std::net::TcpStream, std::net::TcpStream)> {
    let flow = fwcluster_lab::sessions::TcpFlow::open(lab, 8081)?;
    Ok((flow.client, flow.server))
}

/// Node loss of fws1 while a NAT'd TCP connection runs through it; then the *server* sends
/// first (a node without the connection's entry would drop or reset it), then the client.
fn connection_after_node_loss(sync: bool) -> Result<Result<()>> {
    let lab = seed::build()?;
    let body = format!(
        "{TIMING}{}{GROUP0}{}",
        fwcluster_lab::seed_servers!(),
        if sync {
            "\n[sync]\ninterconnect = 0\n"
        } else {
            ""
        }
    );
    let cluster = started(&lab, &body, sync)?;
    let (client, server) = connection(&lab)?;
    exchange(&client, &server, b"before")?;
    exchange(&server, &client, b"answer")?;
    // Replication is continuous; give it a moment on this machine.
    std::thread::sleep(Duration::from_millis(300));
    lab.cut_host(FWS1)?;
    cluster.wait_for(
        FWS2,
        "FWC201",
        "group0 is active on fws2",
        Duration::from_secs(3),
    )?;
    Ok((|| {
        exchange(&server, &client, b"the server speaks first")?;
        exchange(&client, &server, b"and the client answers")
    })())
}

#[test]
fn a_nated_connection_survives_node_loss_with_sync_and_not_without() -> Result<()> {
    connection_after_node_loss(true)?
        .context("with [sync] the connection must survive the loss of fws1")?;
    ensure!(
        connection_after_node_loss(false)?.is_err(),
        "without [sync] the connection survived: the test would not see a lost entry"
    );
    Ok(())
}

#[test]
fn auto_failback_waits_for_the_sync_and_keeps_connections_from_before_and_from_while_away()
-> Result<()> {
    let lab = seed::build()?;
    let body = format!(
        "{TIMING}{}{}\n[sync]\ninterconnect = 0\nwait = \"2s\"\n",
        fwcluster_lab::seed_servers!(),
        GROUP0.replace("failback = \"manual\"", "failback = \"auto\"")
    );
    let mut cluster = started(&lab, &body, true)?;
    let (client1, server1) = connection(&lab)?;
    exchange(&client1, &server1, b"before").context("before the failover")?;
    std::thread::sleep(Duration::from_millis(300));
    // fws1's daemon dies (and its conntrackd with it); fws2 takes over.
    cluster.kill(FWS1)?;
    cluster.wait_for(
        FWS2,
        "FWC201",
        "group0 is active on fws2",
        Duration::from_secs(3),
    )?;
    exchange(&server1, &client1, b"through fws2").context("after the failover")?;
    // A connection that only fws2 has seen, and traffic that moves the first one's windows on.
    let (client2, server2) = connection(&lab).context("a new connection through fws2")?;
    for _ in 0..20 {
        exchange(&client1, &server1, &[b'x'; 1000]).context("the first, through fws2")?;
        exchange(&client2, &server2, &[b'y'; 1000]).context("the second, through fws2")?;
    }
    // fws1 returns: it takes the group back only after the sync wait.
    let restarted = Instant::now();
    cluster.start(&lab, FWS1)?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(10))?;
    let waited = restarted.elapsed();
    ensure!(
        waited >= Duration::from_secs(2),
        "failback after {waited:?}, before the sync wait"
    );
    for (n, (client, server)) in [(&client1, &server1), (&client2, &server2)]
        .into_iter()
        .enumerate()
    {
        exchange(server, client, b"the server speaks first, through fws1").with_context(|| {
            format!(
                "connection {} after the failback\nfws1:\n{}\nfws2:\n{}",
                n + 1,
                run(&lab, FWS1, "conntrack", &["-L", "-p", "tcp"]).unwrap_or_default(),
                run(&lab, FWS2, "conntrack", &["-L", "-p", "tcp"]).unwrap_or_default()
            )
        })?;
        exchange(client, server, b"and the client answers")
            .with_context(|| format!("connection {} after the failback", n + 1))?;
    }
    Ok(())
}

#[test]
fn planned_moves_a_stop_and_a_killed_conntrackd_keep_every_connection() -> Result<()> {
    let lab = seed::build()?;
    let body = format!(
        "{TIMING}{}{GROUP0}\n[sync]\ninterconnect = 0\nwait = \"1s\"\n",
        fwcluster_lab::seed_servers!()
    );
    let mut cluster = started(&lab, &body, true)?;
    // fws2 started while fws1 runs group0: it takes part once its sync wait is over.
    std::thread::sleep(Duration::from_millis(1500));
    let mut connections = vec![connection(&lab)?];
    let check = |connections: &[(std::net::TcpStream, std::net::TcpStream)], when: &str| {
        for (n, (client, server)) in connections.iter().enumerate() {
            exchange(server, client, b"server first")
                .and_then(|()| exchange(client, server, b"client second"))
                .with_context(|| format!("connection {} {when}", n + 1))?;
        }
        anyhow::Ok(())
    };
    check(&connections, "at the start")?;
    std::thread::sleep(Duration::from_millis(300));
    // clpgrp -m to fws2 and back, a new connection each time.
    for (from, to) in [(FWS1, FWS2), (FWS2, FWS1)] {
        let (ok, out) = cluster.tool(&lab, from, "clpgrp", &["-m", "-g", "group0"])?;
        ensure!(
            ok,
            "clpgrp -m on {from}: {out}\n{}",
            cluster.all_logs_tail(40)
        );
        cluster.wait_holder(from, "group0", to, Duration::from_secs(5))?;
        check(&connections, &format!("after clpgrp -m to {to}"))?;
        connections.push(connection(&lab)?);
        std::thread::sleep(Duration::from_millis(300));
    }
    // conntrackd killed on the active node: restarted, a warning, no failover, and the
    // connections it had replicated stay replicated.
    // fws1's own conntrackd: the one in its network namespace (pgrep would see the host's).
    let pid = fwcluster_lab::netns::processes(lab.ns(FWS1))?
        .into_iter()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "conntrackd")
        })
        .context("conntrackd runs on fws1")? as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    cluster.wait_for(FWS1, "FWC602", "conntrackd exited", Duration::from_secs(3))?;
    cluster.wait_for(FWS1, "FWC601", "started again", Duration::from_secs(8))?;
    ensure!(
        cluster.holder(FWS2, "group0")?.as_deref() == Some(FWS1),
        "a dead conntrackd is no failover"
    );
    // A connection opened after the restart is replicated too.
    connections.push(connection(&lab)?);
    let port = connections
        .last()
        .context("just pushed")?
        .0
        .local_addr()?
        .port();
    let on_fws2 = wait_until(Duration::from_secs(3), || {
        Ok(run(
            &lab,
            FWS2,
            "conntrack",
            &["-L", "-p", "tcp", "--orig-port-src", &port.to_string()],
        )?
        .contains("ESTABLISHED"))
    })?;
    if !on_fws2 {
        let stats = |host: &str| {
            let conf = cluster
                .run_dir(host)
                .join(format!("conntrackd-{host}.conf"));
            run(
                &lab,
                host,
                "conntrackd",
                &["-C", conf.to_str().unwrap_or_default(), "-s"],
            )
            .unwrap_or_default()
        };
        anyhow::bail!(
            "a connection opened after conntrackd's restart on fws1 is not on fws2\nfws1 stats:\n{}\nfws2 stats:\n{}\nfws1 log:\n{}\nfws2 log:\n{}",
            stats(FWS1),
            stats(FWS2),
            std::fs::read_to_string(cluster.run_dir(FWS1).join("conntrackd-fws1.log"))
                .unwrap_or_default(),
            std::fs::read_to_string(cluster.run_dir(FWS2).join("conntrackd-fws2.log"))
                .unwrap_or_default(),
        );
    }
    // A planned stop of fws1 (SIGTERM): every connection continues on fws2.
    cluster.stop(FWS1, Duration::from_secs(10))?;
    cluster.wait_holder(FWS2, "group0", FWS2, Duration::from_secs(5))?;
    check(&connections, "after fws1 stopped")?;
    Ok(())
}

/// Sync traffic (conntrackd's port) dropped on `host` in both directions, or let through again;
/// heartbeats on the same interconnect are not touched.
fn cut_sync(lab: &Lab, host: &str, cut: bool) -> Result<()> {
    if cut {
        lab.nft(
            host,
            "table inet synccut {\n chain in { type filter hook input priority -10; udp dport 3780 drop\n }\n chain out { type filter hook output priority -10; udp dport 3780 drop\n }\n}\n",
        )
    } else {
        lab.run(host, "nft", &["delete", "table", "inet", "synccut"])?;
        Ok(())
    }
}

#[test]
fn a_lost_sync_link_is_a_warning_and_a_mail_not_a_failover_and_shows_in_clpstat() -> Result<()> {
    use fwcluster_lab::smtp::{smtp, wait_mails};
    let lab = seed::build()?;
    let dir = tempfile::tempdir()?;
    let maildir = dir.path().join("maildir");
    let _server = smtp(&lab, &maildir)?;
    let body = format!(
        "{TIMING}\n[mail]\nsmtp = \"smtp://{}\"\nfrom = \"cluster@fws.example\"\nto = [\"admin@example.com\"]\noutbox = \"{{dir}}/outbox\"\n\n{}{GROUP0}\n[sync]\ninterconnect = 0\nwait = \"3s\"\n",
        fwcluster_lab::smtp::LISTEN,
        fwcluster_lab::seed_servers!()
    );
    let cluster = started(&lab, &body, true)?;
    let states = |host: &str| -> Result<Vec<String>> {
        Ok(cluster.status(host)?.sync.context("a sync view")?.states)
    };
    // fws2 started beside the running group0: it waits for fws1's entries.
    ensure!(
        wait_until(Duration::from_secs(2), || Ok(states(FWS2)?
            == ["OK", "SYNCING"]
            && states(FWS1)? == ["OK", "SYNCING"]))?,
        "{:?} {:?}",
        states(FWS1)?,
        states(FWS2)?
    );
    ensure!(
        wait_until(Duration::from_secs(6), || Ok(
            states(FWS1)? == ["OK", "OK"] && states(FWS2)? == ["OK", "OK"]
        ))?,
        "{:?} {:?}",
        states(FWS1)?,
        states(FWS2)?
    );
    let (ok, screen) = cluster.tool(&lab, FWS1, "clpstat", &["-s"])?;
    ensure!(
        ok && screen.contains("SYNC                  OK       OK"),
        "{screen}"
    );
    ensure!(screen.contains("SYNC : link up,"), "{screen}");

    // conntrackd's traffic dropped on fws2: both sides warn and mail, nothing fails over.
    cut_sync(&lab, FWS2, true)?;
    for host in [FWS1, FWS2] {
        cluster.wait_for(host, "FWC603", "sync link lost", Duration::from_secs(8))?;
    }
    ensure!(states(FWS1)? == ["NG", "NG"], "{:?}", states(FWS1)?);
    let view = cluster.status(FWS1)?;
    let metrics = cluster_ctl::metrics::render(&view);
    ensure!(
        metrics.contains("fwcluster_sync_ok{server=\"fws2\"} 0"),
        "{metrics}"
    );
    ensure!(
        cluster.holder(FWS2, "group0")?.as_deref() == Some(FWS1)
            && cluster.lines_with(FWS2, "FWC201").is_empty(),
        "a lost sync link is no failover"
    );
    let mails = wait_mails(&maildir, 2, Duration::from_secs(15));
    let mut subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
    subjects.sort();
    ensure!(
        subjects
            == [
                "WARNING: session sync from fws1 to fws2 is lost",
                "WARNING: session sync from fws2 to fws1 is lost"
            ],
        "{subjects:?}\n{}",
        cluster.all_logs_tail(30)
    );
    // Each side reports what no longer reaches it: "from fws1 to fws2" comes from fws2, on
    // its sync address.
    for mail in &mails {
        let reporter = if mail.subject.contains("to fws2") {
            "Firewall(fws2[169.254.12.2])"
        } else {
            "Firewall(fws1[169.254.12.1])"
        };
        ensure!(
            mail.body.contains(reporter),
            "{}\n{}",
            mail.subject,
            mail.body
        );
    }
    // A connection opened while the link is down is not on fws2 yet; when the link works
    // again FTFW resends what fws1 queued for it (nothing overflowed), and it is.
    let (client, server) = connection(&lab)?;
    exchange(&client, &server, b"while the sync link is down")?;
    let port = client.local_addr()?.port().to_string();
    let on_fws2 = || -> Result<bool> {
        Ok(run(
            &lab,
            FWS2,
            "conntrack",
            &["-L", "-p", "tcp", "--orig-port-src", &port],
        )?
        .contains("ESTABLISHED"))
    };
    std::thread::sleep(Duration::from_millis(500));
    ensure!(!on_fws2()?, "replicated through a dropped link?");
    cut_sync(&lab, FWS2, false)?;
    for host in [FWS1, FWS2] {
        cluster.wait_for(
            host,
            "FWC604",
            "sync link works again",
            Duration::from_secs(8),
        )?;
    }
    ensure!(
        wait_until(Duration::from_secs(5), on_fws2)?,
        "the connection opened during the outage did not reach fws2 after the link came back"
    );
    ensure!(states(FWS1)? == ["OK", "OK"], "{:?}", states(FWS1)?);
    let mails = wait_mails(&maildir, 4, Duration::from_secs(15));
    let restored = mails
        .iter()
        .filter(|m| m.subject.contains("works again"))
        .count();
    ensure!(
        restored == 2,
        "{:?}",
        mails.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
    Ok(())
}

/// TCP, UDP and ICMP flows through group0, more after every event.
#[derive(Default)]
struct Flows {
    tcp: Vec<fwcluster_lab::sessions::TcpFlow>,
    udp: Vec<fwcluster_lab::sessions::UdpFlow>,
    icmp: Vec<fwcluster_lab::sessions::IcmpFlow>,
}

impl Flows {
    /// One more TCP and UDP flow, and with `icmp` an ICMP one.
    fn open(&mut self, lab: &Lab, icmp: bool) -> Result<()> {
        use fwcluster_lab::sessions::{IcmpFlow, TcpFlow, UdpFlow};
        let n = self.tcp.len() as u16;
        self.tcp.push(TcpFlow::open(lab, 8100 + n)?);
        self.udp.push(UdpFlow::open(lab, 9100 + n)?);
        if icmp {
            self.icmp.push(IcmpFlow::open(lab, 0x4100 + n)?);
        }
        Ok(())
    }

    /// Every flow still exchanges data, the server side first.
    fn check(&mut self, when: &str) -> Result<()> {
        for (n, flow) in self.tcp.iter().enumerate() {
            flow.check()
                .with_context(|| format!("TCP connection {} {when}", n + 1))?;
        }
        for (n, flow) in self.udp.iter().enumerate() {
            flow.check()
                .with_context(|| format!("UDP flow {} {when}", n + 1))?;
        }
        for (n, flow) in self.icmp.iter_mut().enumerate() {
            flow.check()
                .with_context(|| format!("ICMP flow {} {when}", n + 1))?;
        }
        Ok(())
    }

    /// The flows whose entry is not in `host`'s kernel table (not replicated to it).
    fn missing_on(&self, lab: &Lab, host: &str) -> Result<Vec<String>> {
        use fwcluster_lab::sessions::tracked;
        let mut missing = Vec::new();
        for flow in &self.tcp {
            if !tracked(lab, host, "tcp", flow.client_port()?)? {
                missing.push(format!("TCP from port {}", flow.client_port()?));
            }
        }
        for flow in &self.udp {
            if !tracked(lab, host, "udp", flow.client_port()?)? {
                missing.push(format!("UDP from port {}", flow.client_port()?));
            }
        }
        for flow in &self.icmp {
            if !tracked(lab, host, "icmp", flow.id)? {
                missing.push(format!("ICMP id {}", flow.id));
            }
        }
        Ok(missing)
    }
}

#[test]
fn tcp_udp_and_icmp_flows_survive_ip_watch_failover_a_killed_process_and_a_restart_in_the_lease()
-> Result<()> {
    let lab = seed::build()?;
    // 200 ms heartbeats, 1 s timeout: a daemon restart fits in its lease.
    let body = format!(
        "heartbeat_interval = \"200ms\"\nheartbeat_timeout = \"1s\"\nwait_timeout = \"3s\"\n{}{GROUP0}
  [[group.ipw]]
  targets = [\"192.0.2.254\"]
  interval = \"50ms\"
  timeout = \"100ms\"
  retry = 1

  [[group.exec]]
  name = \"fwalive\"
  start = \"exec sleep 1000\"
  stop = \"true\"
  monitor = true
  retry = 0
  recover = \"failover\"

[sync]
interconnect = 0
wait = \"1s\"
",
        fwcluster_lab::seed_servers!()
    );
    let mut cluster = started(&lab, &body, true)?;
    std::thread::sleep(Duration::from_millis(1500));
    let mut flows = Flows::default();
    flows.open(&lab, true)?;
    flows.check("at the start")?;
    // From now on neither node lets a new ICMP flow through: the echo flow continues on a
    // node only through its replicated entry (otherwise any node would pass it as new).
    for host in [FWS1, FWS2] {
        lab.nft(
            host,
            "table inet icmpnonew {\n chain no_new_icmp { type filter hook forward priority -5; ct state new ip protocol icmp drop\n }\n}\n",
        )?;
    }
    let run_dirs = [FWS1, FWS2].map(|host| cluster.run_dir(host));
    let replicated_to = |flows: &Flows, host: &str| -> Result<()> {
        ensure!(
            wait_until(Duration::from_secs(3), || Ok(flows
                .missing_on(&lab, host)?
                .is_empty()))?,
            "not on {host}: {:?}\n{}\nconntrackd's logs:\n{}\n{}",
            flows.missing_on(&lab, host)?,
            run(&lab, host, "conntrack", &["-L"]).unwrap_or_default(),
            std::fs::read_to_string(
                run_dirs[usize::from(host == FWS2)].join(format!("conntrackd-{host}.log"))
            )
            .unwrap_or_default(),
            std::fs::read_to_string(run_dirs[0].join("conntrackd-fws1.log")).unwrap_or_default()
        );
        Ok(())
    };
    replicated_to(&flows, FWS2)?;

    // IP watch: fws1 loses its target; the group moves to fws2.
    let ipw_cut = "table inet ipwcut {\n chain in { type filter hook input priority -10; ip saddr 192.0.2.254 icmp type echo-reply drop\n }\n}\n";
    lab.nft(FWS1, ipw_cut)?;
    cluster.wait_holder(FWS2, "group0", FWS2, Duration::from_secs(5))?;
    flows.check("after the IP-watch failover to fws2")?;
    lab.run(FWS1, "nft", &["delete", "table", "inet", "ipwcut"])?;
    cluster.wait_for(FWS1, "FWC206", "STARTING=ALLOW", Duration::from_secs(5))?;
    flows.open(&lab, false)?;
    replicated_to(&flows, FWS1)?;

    // The monitored process dies on fws2; the group moves back to fws1.
    let pid = *cluster
        .status(FWS2)?
        .exec_pids
        .get("group0-exec0")
        .context("the monitored process runs on fws2")?;
    fwcluster_lab::kill(pid)?;
    cluster.wait_holder(FWS1, "group0", FWS1, Duration::from_secs(5))?;
    flows.check("after the monitored process died on fws2")?;
    flows.open(&lab, false)?;
    replicated_to(&flows, FWS2)?;

    // fws1's daemon restarts within its lease: adopted, no failover; its conntrackd restarts
    // with it and goes on replicating, also what is opened afterwards.
    cluster.kill(FWS1)?;
    cluster.start(&lab, FWS1)?;
    cluster.wait_for(FWS1, "FWC006", "adopted", Duration::from_secs(3))?;
    ensure!(
        cluster.holder(FWS2, "group0")?.as_deref() == Some(FWS1),
        "a restart within the lease is no failover"
    );
    cluster.wait_for(FWS1, "FWC601", "conntrackd started", Duration::from_secs(3))?;
    flows.check("after fws1's daemon restarted")?;
    flows.open(&lab, false)?;
    replicated_to(&flows, FWS2)?;

    // And they all continue on fws2 when fws1 stops.
    cluster.stop(FWS1, Duration::from_secs(10))?;
    cluster.wait_holder(FWS2, "group0", FWS2, Duration::from_secs(5))?;
    flows.check("after fws1 stopped")?;
    Ok(())
}

/// A UDP flow and an echo flow carry packets every second without changing state, so the
/// kernel reports nothing of them after their start; their copies on fws2 must not expire
/// (timeouts lowered to 6 s here, 120 s and 30 s by default), and they continue on fws2.
#[test]
fn udp_and_echo_flows_that_change_no_state_keep_their_copies_past_their_timeout_and_survive()
-> Result<()> {
    let lab = seed::build()?;
    let body = format!(
        "{TIMING}{}{GROUP0}\n[sync]\ninterconnect = 0\n",
        fwcluster_lab::seed_servers!()
    );
    let timeouts = [
        "net.netfilter.nf_conntrack_udp_timeout=6",
        "net.netfilter.nf_conntrack_udp_timeout_stream=6",
        "net.netfilter.nf_conntrack_icmp_timeout=6",
    ];
    let cluster = started_with(&lab, &body, true, &timeouts)?;
    let mut flows = Flows::default();
    flows.open(&lab, true)?;
    // The echo continues on fws2 only through its copy.
    for host in [FWS1, FWS2] {
        lab.nft(
            host,
            "table inet icmpnonew {\n chain no_new_icmp { type filter hook forward priority -5; ct state new ip protocol icmp drop\n }\n}\n",
        )?;
    }
    // Three timeouts' worth of packets, one exchange a second; the copies are checked all
    // along, not only at the end.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(18) {
        let (udp, echo) = (&flows.udp[0], &mut flows.icmp[0]);
        udp.check().context("the UDP flow through fws1")?;
        echo.check().context("the echo flow through fws1")?;
        if started.elapsed() > Duration::from_secs(2) {
            let missing = flows.missing_on(&lab, FWS2)?;
            ensure!(
                missing.is_empty(),
                "after {:?} fws2 has lost its copy of {missing:?}:\n{}",
                started.elapsed(),
                run(&lab, FWS2, "conntrack", &["-L"]).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let refreshed = cluster
        .status(FWS1)?
        .sync
        .and_then(|s| s.refreshed)
        .unwrap_or(0);
    ensure!(refreshed > 0, "fws1 reports no refreshed copy");
    lab.cut_host(FWS1)?;
    cluster.wait_for(
        FWS2,
        "FWC201",
        "group0 is active on fws2",
        Duration::from_secs(3),
    )?;
    flows.check("after fws1 was lost")
}

#[test]
fn with_flow_share_both_nodes_hold_every_flow_and_a_dead_nodes_connections_continue_on_the_survivor()
-> Result<()> {
    let lab = seed::build()?;
    // A shared gateway on both sides of the firewall: the internet reaches the DMZ through
    // 192.0.2.30, the DMZ host leaves through 198.51.100.30; one bucket table (symmetric
    // five-tuple hash), so both directions of a connection pass through one node.
    let body = format!(
        "{TIMING}{}
[[flowshare]]
name = \"ls0\"
address = \"192.0.2.30/24\"
interface = \"eth0\"
mac = \"01:00:5e:00:02:1e\"
hash = \"5tuple\"
buckets = 64

[[flowshare]]
name = \"ls1\"
address = \"198.51.100.30/24\"
interface = \"eth1\"
mac = \"01:00:5e:00:02:1f\"
hash = \"5tuple\"
buckets = 64
buckets_of = \"ls0\"

[sync]
interconnect = 0
wait = \"1s\"
",
        fwcluster_lab::seed_servers!()
    );
    let mut cluster = fwcluster_lab::cluster::Cluster::new(&lab, &body)?;
    for host in [FWS1, FWS2] {
        fwcluster_lab::firewall::load_example(&lab, &cluster, host)?;
        lab.run(
            host,
            "sysctl",
            &["-qw", "net.netfilter.nf_conntrack_tcp_loose=0"],
        )?;
    }
    lab.run(
        seed::INET_CLIENT,
        "ip",
        &["route", "replace", "198.51.100.0/24", "via", "192.0.2.30"],
    )?;
    lab.run(
        seed::DMZ_HOST,
        "ip",
        &["route", "replace", "default", "via", "198.51.100.30"],
    )?;
    cluster.start(&lab, FWS1)?;
    cluster.wait_for(FWS1, "FWC004", "eth1", Duration::from_secs(5))?;
    cluster.start(&lab, FWS2)?;
    // fws2 joins beside fws1, which passes flows: buckets for fws2 after its sync wait.
    let buckets = |host: &str| -> Result<usize> {
        Ok(cluster
            .status(host)?
            .flow_buckets
            .get("ls1")
            .copied()
            .unwrap_or_default())
    };
    ensure!(
        wait_until(Duration::from_secs(5), || Ok(buckets(FWS1).ok()
            == Some(32)
            && buckets(FWS2).ok() == Some(32)))?,
        "buckets {:?} / {:?}\n{}",
        buckets(FWS1).ok(),
        buckets(FWS2).ok(),
        cluster.all_logs_tail(30)
    );
    // Connections from the DMZ host to the internet client, spread over both nodes.
    use std::net::{SocketAddrV4, TcpListener, TcpStream};
    let server = SocketAddrV4::new(seed::INET_CLIENT_ADDRESS, 8300);
    let listener =
        fwcluster_lab::in_netns(lab.ns(seed::INET_CLIENT), move || TcpListener::bind(server))??;
    let passed =
        |host: &str| -> Result<u64> { Ok(cluster.status(host)?.xdp_counters["flow_passed"]) };
    let fws1_before = passed(FWS1)?;
    let mut connections = Vec::new();
    for _ in 0..16 {
        let client = fwcluster_lab::in_netns(lab.ns(seed::DMZ_HOST), move || {
            TcpStream::connect_timeout(&server.into(), Duration::from_secs(2))
        })??;
        let (accepted, _) = listener.accept()?;
        for end in [&client, &accepted] {
            end.set_read_timeout(Some(Duration::from_secs(3)))?;
        }
        exchange(&client, &accepted, b"hello")?;
        exchange(&accepted, &client, b"hello back")?;
        connections.push((client, accepted));
    }
    ensure!(
        passed(FWS1)? > fws1_before && passed(FWS2)? > 0,
        "both nodes pass some of the connections"
    );
    // Both nodes hold every connection's entry.
    for (client, _) in &connections {
        let port = client.local_addr()?.port();
        for host in [FWS1, FWS2] {
            ensure!(
                wait_until(Duration::from_secs(3), || fwcluster_lab::sessions::tracked(
                    &lab, host, "tcp", port
                ))?,
                "{host} lacks the connection from port {port}"
            );
        }
    }
    // fws1 dies: fws2 takes its buckets, and every connection continues, the server first.
    lab.cut_host(FWS1)?;
    ensure!(
        wait_until(Duration::from_secs(3), || Ok(buckets(FWS2)? == 64))?,
        "fws2 did not take every bucket"
    );
    for (n, (client, accepted)) in connections.iter().enumerate() {
        exchange(accepted, client, b"the server speaks first")
            .and_then(|()| exchange(client, accepted, b"and the client answers"))
            .with_context(|| format!("connection {} after fws1 died", n + 1))?;
    }
    // fws1 comes back: half of the buckets return to it, with connections whose windows moved
    // on through fws2 meanwhile; they continue too.
    lab.restore_host(FWS1)?;
    ensure!(
        wait_until(Duration::from_secs(5), || Ok(buckets(FWS1).ok()
            == Some(32)
            && buckets(FWS2).ok() == Some(32)))?,
        "the buckets were not dealt back: {:?} / {:?}",
        buckets(FWS1).ok(),
        buckets(FWS2).ok()
    );
    for (n, (client, accepted)) in connections.iter().enumerate() {
        exchange(accepted, client, b"the server speaks first")
            .and_then(|()| exchange(client, accepted, b"and the client answers"))
            .with_context(|| format!("connection {} after fws1 came back", n + 1))?;
    }
    Ok(())
}

/// `PORT a,b,c,d,p1,p2` → the address it names.
fn port_command_address(line: &str) -> Result<std::net::SocketAddrV4> {
    let numbers: Vec<u8> = line
        .trim()
        .strip_prefix("PORT ")
        .context("a PORT command")?
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let [a, b, c, d, p1, p2] = numbers[..] else {
        anyhow::bail!("PORT with {} numbers", numbers.len());
    };
    Ok(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::new(a, b, c, d),
        u16::from(p1) * 256 + u16::from(p2),
    ))
}

/// How group0 gets from fws1 to fws2.
#[derive(Clone, Copy)]
enum Takeover {
    NodeLoss,
    PlannedMove,
}

/// An active-mode FTP control connection from `client` (in `client_ns`) to the internet
/// client, through group0 on fws1 with the operator's ruleset running the FTP helper; its
/// `PORT` command's expectation replicated to fws2; then group0 on fws2 by `takeover`, which
/// still holds the expectation. Returns the control connection (client end, server end) and
/// the address the `PORT` command names as the server sees it.
fn ftp_expectation_through(
    lab: &Lab,
    cluster: &fwcluster_lab::cluster::Cluster,
    client_ns: &'static str,
    client: std::net::Ipv4Addr,
    takeover: Takeover,
    wait_before_takeover: Duration,
) -> Result<(
    std::net::TcpStream,
    std::net::TcpStream,
    std::net::SocketAddrV4,
)> {
    use std::io::{BufRead as _, Write as _};
    use std::net::{SocketAddrV4, TcpListener, TcpStream};
    for host in [FWS1, FWS2] {
        lab.nft(
            host,
            "table inet ftphelper {\n ct helper ftp { type \"ftp\" protocol tcp; }\n chain pre { type filter hook prerouting priority filter; tcp dport 21 ct helper set \"ftp\"\n }\n}\n",
        )?;
    }
    std::thread::sleep(Duration::from_millis(1500));
    let control = SocketAddrV4::new(seed::INET_CLIENT_ADDRESS, 21);
    let listener = fwcluster_lab::in_netns(lab.ns(seed::INET_CLIENT), move || {
        TcpListener::bind(control)
    })??;
    let mut client_end = fwcluster_lab::in_netns(lab.ns(client_ns), move || {
        TcpStream::connect_timeout(&control.into(), Duration::from_secs(2))
    })??;
    let (server_end, _) = listener.accept()?;
    server_end.set_read_timeout(Some(Duration::from_secs(3)))?;
    client_end.set_read_timeout(Some(Duration::from_secs(3)))?;
    // The helper reads a command only after a line end it has seen: a login comes first.
    client_end.set_nodelay(true)?;
    let mut reader = std::io::BufReader::new(&server_end);
    let mut line = String::new();
    client_end.write_all(b"USER ftp\r\n")?;
    reader.read_line(&mut line)?;
    line.clear();
    let [a, b, c, d] = client.octets();
    client_end.write_all(format!("PORT {a},{b},{c},{d},200,10\r\n").as_bytes())?;
    reader.read_line(&mut line)?;
    let expected = port_command_address(&line)?;
    let expectation_on = |host: &str| -> Result<bool> {
        Ok(run(lab, host, "conntrack", &["-L", "expect"])?
            .contains(&format!("dport={}", expected.port())))
    };
    ensure!(
        expectation_on(FWS1)?,
        "fws1 has no expectation for {expected}:\n{}",
        run(lab, FWS1, "conntrack", &["-L", "expect"]).unwrap_or_default()
    );
    ensure!(
        wait_until(Duration::from_secs(3), || expectation_on(FWS2))?,
        "the expectation did not reach fws2:\n{}",
        run(lab, FWS2, "conntrack", &["-L", "expect"]).unwrap_or_default()
    );
    // The control connection stays busy meanwhile (fws1 refreshes the copies of flows it
    // passes).
    let waited = Instant::now();
    while waited.elapsed() < wait_before_takeover {
        client_end.write_all(b"NOOP\r\n")?;
        line.clear();
        reader.read_line(&mut line)?;
        ensure!(line == "NOOP\r\n", "{line:?}");
        (&server_end).write_all(b"200 NOOP ok\r\n")?;
        let mut reply = [0u8; 13];
        std::io::Read::read_exact(&mut client_end, &mut reply)?;
        std::thread::sleep(Duration::from_millis(250));
    }
    ensure!(
        expectation_on(FWS2)?,
        "fws2 lost the expectation before the takeover:\n{}",
        run(lab, FWS2, "conntrack", &["-L", "expect"]).unwrap_or_default()
    );
    match takeover {
        Takeover::NodeLoss => lab.cut_host(FWS1)?,
        Takeover::PlannedMove => {
            let (ok, out) = cluster.tool(lab, FWS1, "clpgrp", &["-m", "-g", "group0"])?;
            ensure!(ok, "clpgrp -m: {out}");
        }
    }
    cluster.wait_for(
        FWS2,
        "FWC201",
        "group0 is active on fws2",
        Duration::from_secs(5),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    ensure!(
        expectation_on(FWS2)?,
        "fws2 lost the expectation at its takeover:\n{}",
        run(lab, FWS2, "conntrack", &["-L", "expect"]).unwrap_or_default()
    );
    Ok((client_end, server_end, expected))
}

/// After the takeover: the server opens the data connection to `connect_to`, as active-mode
/// FTP does, and only the expectation lets it through fws2 (the forward chain drops new
/// connections from the internet), to `listen_at` on the client; it carries data, and the
/// control connection goes on, the server first.
fn ftp_data_connection_and_control_continue(
    lab: &Lab,
    client_ns: &'static str,
    listen_at: std::net::SocketAddrV4,
    connect_to: std::net::SocketAddrV4,
    (mut client, mut server): (std::net::TcpStream, std::net::TcpStream),
) -> Result<()> {
    use std::io::{Read as _, Write as _};
    use std::net::{TcpListener, TcpStream};
    let data_listener =
        fwcluster_lab::in_netns(lab.ns(client_ns), move || TcpListener::bind(listen_at))??;
    let mut data_from_server = fwcluster_lab::in_netns(lab.ns(seed::INET_CLIENT), move || {
        TcpStream::connect_timeout(&connect_to.into(), Duration::from_secs(2))
    })?
    .with_context(|| {
        format!(
            "the server's data connection to {connect_to} through fws2:\n{}",
            run(lab, FWS2, "conntrack", &["-L", "expect"]).unwrap_or_default()
        )
    })?;
    let (mut data_at_client, _) = data_listener.accept()?;
    data_at_client.set_read_timeout(Some(Duration::from_secs(3)))?;
    data_from_server.write_all(b"file contents")?;
    let mut buffer = [0u8; 13];
    data_at_client
        .read_exact(&mut buffer)
        .context("the data at the client")?;
    ensure!(&buffer == b"file contents");
    server.write_all(b"226 Transfer complete\r\n")?;
    let mut reply = [0u8; 23];
    client
        .read_exact(&mut reply)
        .context("the server's reply on the control connection")?;
    ensure!(&reply == b"226 Transfer complete\r\n");
    client.write_all(b"QUIT\r\n")?;
    let mut quit = [0u8; 6];
    server
        .read_exact(&mut quit)
        .context("the client's command on the control connection")?;
    ensure!(&quit == b"QUIT\r\n");
    Ok(())
}

/// The whole of an FTP session through a takeover, hidden behind group0's address: the NAT
/// helper rewrote the `PORT` command on fws1 (3 bytes shorter), and after the takeover the
/// data connection the server opens for that expectation is translated back to the client by
/// fws2, and the control connection goes on with its sequence numbers adjusted. The takeover
/// comes after fws1 refreshed fws2's copy of the control connection (timeouts lowered: a
/// reading every 2 s), which must not cost fws2 its copy of the expectation.
#[test]
fn a_nated_ftp_session_continues_through_node_loss() -> Result<()> {
    nated_ftp_session_through(Takeover::NodeLoss)
}

/// The same through `clpgrp -m`: the pending expectation is not lost on the way.
#[test]
fn a_nated_ftp_session_continues_through_a_planned_move() -> Result<()> {
    nated_ftp_session_through(Takeover::PlannedMove)
}

fn nated_ftp_session_through(takeover: Takeover) -> Result<()> {
    let lab = seed::build()?;
    let body = format!(
        "{TIMING}{}{GROUP0}\n[sync]\ninterconnect = 0\nwait = \"1s\"\n",
        fwcluster_lab::seed_servers!()
    );
    let cluster = started_with(
        &lab,
        &body,
        true,
        &[
            "net.netfilter.nf_conntrack_icmp_timeout=6",
            "net.netfilter.nf_conntrack_udp_timeout=6",
        ],
    )?;
    let refreshed = || -> Result<u64> {
        Ok(cluster
            .status(FWS1)?
            .sync
            .and_then(|s| s.refreshed)
            .unwrap_or(0))
    };
    let before = refreshed()?;
    let (client, server, expected) = ftp_expectation_through(
        &lab,
        &cluster,
        seed::INTRA_CLIENT1,
        seed::INTRA_CLIENT1_ADDRESS,
        takeover,
        Duration::from_secs(5),
    )?;
    ensure!(
        *expected.ip() == seed::GROUP0_INET_FIP,
        "the FTP NAT helper did not rewrite the PORT command to group0's address: {expected}"
    );
    ensure!(
        refreshed()? > before,
        "fws1 refreshed no copy before the takeover: the test would not see its effect"
    );
    let status = cluster.status(FWS2)?.sync.context("fws2's sync view")?;
    ensure!(
        status.helper_copies_written > 0,
        "fws2 reports no expectation written from fws1: {status:?}"
    );
    ftp_data_connection_and_control_continue(
        &lab,
        seed::INTRA_CLIENT1,
        std::net::SocketAddrV4::new(seed::INTRA_CLIENT1_ADDRESS, 200 * 256 + 10),
        expected,
        (client, server),
    )
}

/// The same, from the DMZ, which is not hidden: the expectation carries no NAT.
#[test]
fn an_ftp_data_connection_for_an_expectation_made_before_a_takeover_passes_the_new_node()
-> Result<()> {
    let lab = seed::build()?;
    // group0 with the DMZ's gateway as well.
    let body = format!(
        "{TIMING}{}{GROUP0}
  [[group.fip]]
  address = \"198.51.100.10/24\"
  interface = \"eth1\"

[sync]
interconnect = 0
wait = \"1s\"
",
        fwcluster_lab::seed_servers!()
    );
    let cluster = started(&lab, &body, true)?;
    let (client, server, expected) = ftp_expectation_through(
        &lab,
        &cluster,
        seed::DMZ_HOST,
        seed::DMZ_HOST_ADDRESS,
        Takeover::NodeLoss,
        Duration::ZERO,
    )?;
    ensure!(
        *expected.ip() == seed::DMZ_HOST_ADDRESS,
        "not NAT'd, the PORT command is unchanged: {expected}"
    );
    ftp_data_connection_and_control_continue(
        &lab,
        seed::DMZ_HOST,
        expected,
        expected,
        (client, server),
    )
}
