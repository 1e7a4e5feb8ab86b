//! R-SPLIT-1 and R-HB-4 with real daemons: heartbeats lost in one direction, daemons stopped
//! together (a stall of the whole machine) and one daemon stopped past its lease, while a
//! watcher on the data segment records every ARP answer and announcement for the cluster's
//! addresses for the whole fault: never two MACs for one address.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use fwcluster_lab::{
    Lab,
    arp::double_claims,
    cluster::Cluster,
    seed::{self, FWS1, FWS2, GROUP0_INET_FIP, GROUP0_PARP, INET_CLIENT, INET_IF},
};

fn config(interval: &str, timeout: &str) -> String {
    // Millisecond heartbeats run with real-time scheduling, as an operator would set them up
    // (and as the benchmark runs them).
    let priority = if interval == "1ms" { 10 } else { 0 };
    format!(
        "heartbeat_interval = \"{interval}\"\nheartbeat_timeout = \"{timeout}\"\nwait_timeout = \"3s\"\nrealtime_priority = {priority}\n{}{}",
        fwcluster_lab::seed_servers!(),
        fwcluster_lab::seed_group0!()
    )
}

const ADDRESSES: [std::net::Ipv4Addr; 2] = [GROUP0_INET_FIP, GROUP0_PARP];

/// The tests of this file take turns: the stall test is about the daemons on an otherwise
/// idle machine (another test's daemons competing for the two CPUs make a stall of one of them
/// that no daemon could tell from a death), and the ARP watches about one fault at a time.
static IDLE_MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

type Started = (std::sync::MutexGuard<'static, ()>, Lab, Cluster);

fn started(interval: &str, timeout: &str) -> Result<Started> {
    // A failed test poisons the lock; the next one still gets an idle machine.
    let turn = IDLE_MACHINE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let lab = seed::build()?;
    let mut cluster = Cluster::new(&lab, &config(interval, timeout))?;
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    cluster.wait_holder(FWS1, "group0", FWS1, Duration::from_secs(10))?;
    cluster.wait_for(FWS2, "FWC101", "fws1 is ONLINE", Duration::from_secs(5))?;
    Ok((turn, lab, cluster))
}

/// Drops the heartbeats `host` sends (`output`) or receives (`input`), on every interconnect.
fn drop_heartbeats(lab: &Lab, host: &str, hook: &str) -> Result<()> {
    let port = if hook == "output" { "dport" } else { "sport" };
    lab.nft(
        host,
        &format!(
            "table inet hbcut {{\n chain c {{ type filter hook {hook} priority -10; udp {port} 28002 drop\n }}\n}}\n"
        ),
    )
}

fn restore_heartbeats(lab: &Lab, host: &str) -> Result<()> {
    lab.run(host, "nft", &["delete", "table", "inet", "hbcut"])?;
    Ok(())
}

#[test]
fn heartbeats_lost_from_the_holder_only_move_the_group_with_one_answerer_at_every_instant()
-> Result<()> {
    let (_turn, lab, cluster) = started("20ms", "100ms")?;
    let watch = lab.arp_watch(
        INET_CLIENT,
        INET_IF,
        ADDRESSES.to_vec(),
        Duration::from_millis(1),
    )?;
    std::thread::sleep(Duration::from_millis(200));
    // fws1 still hears fws2; fws2 hears nothing from fws1 and takes over.
    drop_heartbeats(&lab, FWS1, "output")?;
    cluster.wait_holder(FWS2, "group0", FWS2, Duration::from_secs(3))?;
    std::thread::sleep(Duration::from_millis(1_000));
    restore_heartbeats(&lab, FWS1)?;
    std::thread::sleep(Duration::from_millis(500));
    let (sightings, requests) = watch.stop()?;
    let problems = double_claims(&sightings);
    ensure!(
        problems.is_empty(),
        "{problems:#?}\n{}",
        cluster.all_logs_tail(40)
    );
    ensure!(
        cluster.holder(FWS1, "group0")?.as_deref() == Some(FWS2),
        "{}",
        cluster.all_logs_tail(40)
    );
    let fws2 = lab.mac(FWS2, INET_IF)?;
    ensure!(
        sightings.iter().filter(|s| s.mac == fws2).count() > 100,
        "fws2 hardly answered ({requests} requests)"
    );
    Ok(())
}

#[test]
fn heartbeats_lost_towards_the_holder_only_leave_the_group_where_it_is() -> Result<()> {
    let (_turn, lab, cluster) = started("20ms", "100ms")?;
    let watch = lab.arp_watch(
        INET_CLIENT,
        INET_IF,
        ADDRESSES.to_vec(),
        Duration::from_millis(1),
    )?;
    std::thread::sleep(Duration::from_millis(200));
    // fws1 hears nothing from fws2 (its lease lapses for want of acknowledgements, then it
    // runs alone); fws2 still hears fws1 and never takes over.
    drop_heartbeats(&lab, FWS1, "input")?;
    std::thread::sleep(Duration::from_millis(1_500));
    restore_heartbeats(&lab, FWS1)?;
    std::thread::sleep(Duration::from_millis(500));
    let (sightings, _) = watch.stop()?;
    let problems = double_claims(&sightings);
    ensure!(problems.is_empty(), "{problems:#?}");
    let fws2 = lab.mac(FWS2, INET_IF)?;
    ensure!(
        sightings.iter().all(|s| s.mac != fws2),
        "fws2 answered although it heard the holder\n{}",
        cluster.all_logs_tail(40)
    );
    ensure!(cluster.holder(FWS2, "group0")?.as_deref() == Some(FWS1));
    ensure!(
        cluster.lines_with(FWS2, "FWC201").is_empty(),
        "fws2 started the group:\n{}",
        cluster.log(FWS2)
    );
    Ok(())
}

fn daemon_pids(cluster: &Cluster, host: &str) -> Vec<u32> {
    cluster
        .pid(host)
        .into_iter()
        .chain(cluster.worker_pid(host))
        .collect()
}

#[test]
fn stalls_of_both_daemons_together_cause_no_false_offline_and_no_failover() -> Result<()> {
    // R-HB-4 at 1 ms / 5 ms: both daemons stopped together for 20–200 ms, 200 times.
    let (_turn, _lab, cluster) = started("1ms", "5ms")?;
    std::thread::sleep(Duration::from_millis(300));
    let pids: Vec<u32> = [FWS1, FWS2]
        .iter()
        .flat_map(|h| daemon_pids(&cluster, h))
        .collect();
    ensure!(pids.len() == 4, "supervisor and worker of both: {pids:?}");
    let offline_before =
        cluster.lines_with(FWS1, "FWC102").len() + cluster.lines_with(FWS2, "FWC102").len();
    let online_before =
        cluster.lines_with(FWS1, "FWC201").len() + cluster.lines_with(FWS2, "FWC201").len();
    // The daemons run at real-time priority: this thread runs above them, so that its stops
    // and continues reach all four processes back to back, as one stall of the machine would,
    // instead of continuing one daemon and waiting behind it before continuing the other.
    let _above = RealTime::above_the_daemons()?;
    let steal_before = steal_ms();
    for i in 0..200u64 {
        let pause = Duration::from_millis(20 + (i * 37) % 181);
        for pid in &pids {
            fwcluster_lab::freeze(*pid)?;
        }
        std::thread::sleep(pause);
        for pid in &pids {
            fwcluster_lab::thaw(*pid)?;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let offline = cluster.lines_with(FWS1, "FWC102").len()
        + cluster.lines_with(FWS2, "FWC102").len()
        - offline_before;
    let online = cluster.lines_with(FWS1, "FWC201").len()
        + cluster.lines_with(FWS2, "FWC201").len()
        - online_before;
    ensure!(
        offline == 0 && online == 0,
        "{offline} false OFFLINE, {online} group starts after stalls ({} ms of the machine stolen \
         by its hypervisor meanwhile):\n{}",
        steal_ms().saturating_sub(steal_before),
        around(&cluster, "FWC102")
    );
    ensure!(cluster.holder(FWS2, "group0")?.as_deref() == Some(FWS1));
    Ok(())
}

#[test]
fn one_daemon_stopped_past_its_lease_is_taken_over_and_never_answers_beside_the_new_holder()
-> Result<()> {
    let (_turn, lab, cluster) = started("1ms", "5ms")?;
    let fws1 = lab.mac(FWS1, INET_IF)?;
    for round in 0..5u64 {
        let watch = lab.arp_watch(
            INET_CLIENT,
            INET_IF,
            ADDRESSES.to_vec(),
            Duration::from_millis(1),
        )?;
        std::thread::sleep(Duration::from_millis(100));
        let holder = cluster.holder(FWS2, "group0")?.unwrap_or_default();
        let pids = daemon_pids(&cluster, &holder);
        let stopped = Instant::now();
        for pid in &pids {
            fwcluster_lab::freeze(*pid)?;
        }
        std::thread::sleep(Duration::from_millis(50 + 30 * round));
        for pid in &pids {
            fwcluster_lab::thaw(*pid)?;
        }
        std::thread::sleep(Duration::from_millis(300));
        let (sightings, _) = watch.stop()?;
        let problems = double_claims(&sightings);
        ensure!(
            problems.is_empty(),
            "round {round} ({holder} stopped): {problems:#?}\n{}",
            cluster.all_logs_tail(40)
        );
        let other = if holder == FWS1 { FWS2 } else { FWS1 };
        ensure!(
            cluster.holder(other, "group0")?.as_deref() == Some(other),
            "round {round}: {other} did not take over from the stopped {holder}"
        );
        let _ = (stopped, fws1);
    }
    Ok(())
}

/// The log lines of both daemons, merged by time, within 30 ms of every line with `id` (for
/// failure messages).
fn around(cluster: &Cluster, id: &str) -> String {
    let mut lines: Vec<(std::time::SystemTime, String)> = Vec::new();
    for host in [FWS1, FWS2] {
        for line in cluster.log(host).lines() {
            if let Some(at) = fwcluster_lab::cluster::line_time(line) {
                lines.push((at, format!("{host} {line}")));
            }
        }
    }
    lines.sort();
    let marks: Vec<std::time::SystemTime> = lines
        .iter()
        .filter(|(_, l)| l.contains(id))
        .map(|(at, _)| *at)
        .collect();
    let near = |at: &std::time::SystemTime| {
        marks.iter().any(|m| {
            let gap = if at > m {
                at.duration_since(*m)
            } else {
                m.duration_since(*at)
            };
            gap.is_ok_and(|g| g < Duration::from_millis(30))
        })
    };
    lines
        .iter()
        .filter(|(at, _)| near(at))
        .map(|(_, l)| format!("{l}\n"))
        .collect()
}

/// This thread at the top real-time priority while it lives; back to normal on drop.
struct RealTime;

impl RealTime {
    fn above_the_daemons() -> Result<Self> {
        let param = libc::sched_param { sched_priority: 99 };
        // SAFETY: sched_setscheduler on the calling thread with a valid parameter.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
        ensure!(rc == 0, "SCHED_FIFO: {}", std::io::Error::last_os_error());
        Ok(Self)
    }
}

impl Drop for RealTime {
    fn drop(&mut self) {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: as above.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
    }
}

/// CPU time the hypervisor took from this machine so far, in ms (the `steal` of /proc/stat).
fn steal_ms() -> u64 {
    let ticks: u64 = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(8))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1000 / hz
}
