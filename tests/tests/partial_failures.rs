//! R-SPLIT-1 and R-HB-4 with real daemons: heartbeats lost in one direction, daemons stopped
//! together (a stall of the whole machine) and one daemon stopped past its lease, while a
//! watcher on the data segment records every ARP answer and announcement for the cluster's
//! addresses for the whole fault: never two MACs for one address.

use std::time::{Duration, SystemTime};

use anyhow::{Result, ensure};
use fwcluster_lab::{
    Lab,
    arp::double_claims,
    cluster::Cluster,
    freezer::Freezer,
    seed::{self, FWS1, FWS2, GROUP0_INET_FIP, GROUP0_PARP, INET_CLIENT, INET_IF},
    verdict::{Verdict, around},
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
    // The kernel may still be tearing down the namespaces of the test before (it does that
    // after `ip netns del` returns, on the same two CPUs): this test is about stalls of the
    // daemons, so it starts on a quiet machine and says how busy the machine was meanwhile.
    let quiet = fwcluster_lab::machine::wait_until_quiet(
        0.15,
        Duration::from_millis(300),
        Duration::from_secs(30),
    )?;
    let since = SystemTime::now();
    let pids: Vec<u32> = [FWS1, FWS2]
        .iter()
        .flat_map(|h| daemon_pids(&cluster, h))
        .collect();
    ensure!(pids.len() == 4, "supervisor and worker of both: {pids:?}");
    // Both daemons stop and continue at the same instant, as in a stall of the machine.
    let freezer = Freezer::new(&pids)?;
    let cpu_before = fwcluster_lab::machine::CpuTimes::now()?;
    let mut stalls = Vec::new();
    for i in 0..200u64 {
        let pause = Duration::from_millis(20 + (i * 37) % 181);
        let from = SystemTime::now();
        freezer.freeze()?;
        std::thread::sleep(pause);
        freezer.thaw()?;
        stalls.push((from, SystemTime::now()));
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let cpu = fwcluster_lab::machine::CpuTimes::now()?.since(&cpu_before);
    let verdict = Verdict::of(&cluster, since, &stalls);
    ensure!(
        verdict.is_clean(),
        "{} false OFFLINE, {} false group starts after 200 stalls (machine {:.0} % busy before \
         the stalls; meanwhile {} ms busy, {} ms stolen by its hypervisor):\n{}\n{}\n{}",
        verdict.false_offline.len(),
        verdict.false_failovers.len(),
        quiet * 100.0,
        cpu.busy_ms,
        cpu.steal_ms,
        verdict.false_offline.join("\n"),
        verdict.false_failovers.join("\n"),
        around(&cluster, "FWC102")
    );
    eprintln!(
        "200 stalls of both daemons: 0 false OFFLINE, 0 false failovers; {} OFFLINE and {} \
         failovers after the silent daemon itself reported that it had not been scheduled \
         between the stalls (FWC013; {} ms stolen by the hypervisor meanwhile)",
        verdict.machine_offline, verdict.machine_failovers, cpu.steal_ms
    );
    let holders: Vec<Option<String>> = [FWS1, FWS2]
        .iter()
        .map(|h| cluster.holder(h, "group0"))
        .collect::<Result<_>>()?;
    ensure!(
        holders[0].is_some() && holders[0] == holders[1],
        "after the stalls the daemons disagree on group0: {holders:?}\n{}",
        cluster.all_logs_tail(60)
    );
    if verdict.machine_failovers == 0 {
        ensure!(
            holders[0].as_deref() == Some(FWS1),
            "group0 moved to {:?} without a failover",
            holders[0]
        );
    }
    Ok(())
}

#[test]
fn one_daemon_stopped_past_its_lease_is_taken_over_and_never_answers_beside_the_new_holder()
-> Result<()> {
    let (_turn, lab, cluster) = started("1ms", "5ms")?;
    for round in 0..5u64 {
        let watch = lab.arp_watch(
            INET_CLIENT,
            INET_IF,
            ADDRESSES.to_vec(),
            Duration::from_millis(1),
        )?;
        std::thread::sleep(Duration::from_millis(100));
        let holder = cluster.holder(FWS2, "group0")?.unwrap_or_default();
        let other = if holder == FWS1 { FWS2 } else { FWS1 };
        let since = SystemTime::now();
        let freezer = Freezer::new(&daemon_pids(&cluster, &holder))?;
        freezer.freeze()?;
        let frozen = SystemTime::now();
        std::thread::sleep(Duration::from_millis(50 + 30 * round));
        freezer.thaw()?;
        let thawed = SystemTime::now();
        drop(freezer);
        std::thread::sleep(Duration::from_millis(300));
        let (sightings, _) = watch.stop()?;
        let problems = double_claims(&sightings);
        let context = || format!("round {round} ({holder} stopped): {problems:#?}");
        // Two MACs for one request: never, whatever the machine did.
        ensure!(
            problems.iter().all(|p| !p.contains(" answered by ")),
            "{}\n{}",
            context(),
            cluster.all_logs_tail(40)
        );
        // Any other move than the takeover from the stopped holder (the group claimed back)
        // must follow a pause that the node losing the group reported itself (FWC013): the
        // stop injected here explains nothing, so the takeover it caused is the one move the
        // verdict may not explain.
        let verdict = Verdict::of(&cluster, since, &[(frozen, thawed)]);
        let only_the_takeover_unexplained = verdict.false_failovers.len() <= 1
            && verdict
                .false_offline
                .iter()
                .chain(&verdict.false_failovers)
                .all(|line| line.starts_with(other));
        let moved_back = !problems.is_empty();
        ensure!(
            only_the_takeover_unexplained && (!moved_back || verdict.machine_failovers > 0),
            "{}\nverdict: {verdict:#?}\n{}",
            context(),
            cluster.all_logs_tail(40)
        );
        if !moved_back {
            ensure!(
                cluster.holder(other, "group0")?.as_deref() == Some(other),
                "round {round}: {other} did not take over from the stopped {holder}"
            );
        }
    }
    Ok(())
}
