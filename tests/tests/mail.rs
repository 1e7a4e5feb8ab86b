//! Alert mail through a real SMTP server (Debian's aiosmtpd) on the upstream router.

use std::time::{Duration, SystemTime};

use fwcluster_lab::{
    Lab,
    cluster::Cluster,
    seed::{self, FWS1, FWS2},
    smtp::{Mail, mails, smtp, wait_mails},
};

/// Each test starts a Python SMTP server (a CPU-heavy start) next to two daemons whose lease is
/// 20 ms: the tests of this file take turns rather than starve each other's daemons.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

const CONFIG: &str = concat!(
    r#"heartbeat_interval = "10ms"
heartbeat_timeout = "30ms"
wait_timeout = "3s"

[mail]
smtp = "smtp://192.0.2.254:2525"
from = "cluster@fws.example"
to = ["admin@example.com"]
outbox = "{dir}/outbox"

"#,
    fwcluster_lab::seed_servers!(),
    r#"
[[group]]
name = "group0"
policy = ["fws1", "fws2"]

  [[group.fip]]
  address = "192.0.2.10/24"
  interface = "eth0"

  [[group.ipw]]
  targets = ["192.0.2.254"]
  interval = "50ms"
  timeout = "100ms"
  retry = 1
"#
);

fn ipw_target(lab: &Lab, host: &str, reachable: bool) -> anyhow::Result<()> {
    if reachable {
        lab.run(host, "nft", &["delete", "table", "inet", "ipwcut"])?;
        Ok(())
    } else {
        lab.nft(
            host,
            "table inet ipwcut {\n chain in { type filter hook input priority 0; ip saddr 192.0.2.254 icmp type echo-reply drop\n }\n}\n",
        )
    }
}

#[test]
fn failover_mails_arrive_and_queued_mails_survive_a_down_server_and_a_restart() -> anyhow::Result<()>
{
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = seed::build()?;
    let mut cluster = Cluster::new(&lab, CONFIG)?;
    let maildir = cluster.dir.path().join("maildir");
    let server = smtp(&lab, &maildir)?;
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;

    // An IP watch failure on fws1: fws1 reports the group down, fws2 the takeover.
    ipw_target(&lab, FWS1, false)?;
    let received = wait_mails(&maildir, 2, Duration::from_secs(10));
    let subjects: Vec<&str> = received.iter().map(|m| m.subject.as_str()).collect();
    assert!(
        subjects.contains(&"WARNING: [group0] is downed"),
        "{subjects:?}\n{}",
        cluster.all_logs()
    );
    assert!(
        subjects.contains(&"NOTICE: [group0] changes to the active firewall"),
        "{subjects:?}"
    );
    let down = received
        .iter()
        .find(|m| m.subject.starts_with("WARNING"))
        .unwrap();
    assert!(
        down.body
            .contains("[group0] is not active on Firewall(fws1[169.254.12.1])"),
        "{}",
        down.body
    );
    assert!(
        down.body
            .contains("Cause: IP watch entry 0 lost all its targets"),
        "{}",
        down.body
    );
    let up = received
        .iter()
        .find(|m| m.subject.starts_with("NOTICE"))
        .unwrap();
    assert!(
        up.body.contains("firewall(fws2[169.254.12.2])"),
        "{}",
        up.body
    );
    assert!(
        up.body
            .contains("handed over by fws1 after a failure there"),
        "{}",
        up.body
    );

    // The mail server goes down; fws1 recovers and fws2 fails: both alerts wait in the outbox.
    drop(server);
    ipw_target(&lab, FWS1, true)?;
    cluster.wait_for(FWS1, "FWC206", "STARTING=ALLOW", Duration::from_secs(3))?;
    let event = SystemTime::now();
    ipw_target(&lab, FWS2, false)?;
    cluster.wait_holder(FWS1, "group0", FWS1, Duration::from_secs(5))?;
    cluster.wait_for(FWS2, "FWC403", "not delivered", Duration::from_secs(5))?;
    // The daemon holding a queued alert restarts meanwhile.
    cluster.kill(FWS2)?;
    cluster.start(&lab, FWS2)?;
    std::thread::sleep(Duration::from_secs(2));
    let back = SystemTime::now();
    let _server = smtp(&lab, &maildir)?;
    let received = wait_mails(&maildir, 4, Duration::from_secs(20));
    assert_eq!(
        received.len(),
        4,
        "nothing lost, nothing duplicated\n{}",
        cluster.all_logs()
    );
    let late: Vec<&Mail> = received[2..].iter().collect();
    let subjects: Vec<&str> = late.iter().map(|m| m.subject.as_str()).collect();
    assert!(
        subjects.contains(&"WARNING: [group0] is downed"),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&"NOTICE: [group0] changes to the active firewall"),
        "{subjects:?}"
    );
    for mail in late {
        // The Date header is the time of the event (seconds resolution), not of delivery.
        let date = mail.date;
        assert!(
            date + Duration::from_secs(1) >= event && date < back,
            "Date {:?} is not the event time {:?} (server back at {:?})",
            humantime::format_rfc3339(date),
            humantime::format_rfc3339(event),
            humantime::format_rfc3339(back)
        );
    }
    Ok(())
}

fn sighup(cluster: &Cluster, host: &str) -> anyhow::Result<()> {
    let pid = cluster.pid(host).expect("daemon running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )?;
    Ok(())
}

#[test]
fn sighup_applies_new_mail_settings_and_refuses_invalid_or_other_changes() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = seed::build()?;
    // The mail server listens on 2525; the configuration names a port where nothing listens.
    let wrong_port = CONFIG.replace("192.0.2.254:2525", "192.0.2.254:2599");
    let mut cluster = Cluster::new(&lab, &wrong_port)?;
    let maildir = cluster.dir.path().join("maildir");
    let _server = smtp(&lab, &maildir)?;
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(5))?;
    ipw_target(&lab, FWS1, false)?;
    cluster.wait_holder(FWS2, "group0", FWS2, Duration::from_secs(5))?;
    cluster.wait_for(FWS2, "FWC403", "not delivered", Duration::from_secs(5))?;
    let original = std::fs::read_to_string(&cluster.config)?;

    // A file that does not validate: refused, named, nothing changes.
    std::fs::write(
        &cluster.config,
        original.replace(
            "heartbeat_timeout = \"30ms\"",
            "heartbeat_timeout = \"5ms\"",
        ),
    )?;
    sighup(&cluster, FWS2)?;
    let line = cluster.wait_for(FWS2, "FWC009", "not valid", Duration::from_secs(3))?;
    assert!(line.contains("heartbeat_timeout"), "{line}");
    // A valid file that changes the cluster's behaviour: refused as a whole, sections named,
    // even though its mail settings are right.
    std::fs::write(
        &cluster.config,
        original
            .replace(
                "heartbeat_timeout = \"30ms\"",
                "heartbeat_timeout = \"40ms\"",
            )
            .replace("192.0.2.254:2599", "192.0.2.254:2525"),
    )?;
    sighup(&cluster, FWS2)?;
    let line = cluster.wait_for(FWS2, "FWC009", "only [mail]", Duration::from_secs(3))?;
    assert!(line.contains("cluster, mail"), "{line}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        mails(&maildir).is_empty(),
        "the refused mail settings were applied"
    );

    // Only the mail server changes: applied, and the queued alert goes out.
    std::fs::write(
        &cluster.config,
        original.replace("192.0.2.254:2599", "192.0.2.254:2525"),
    )?;
    sighup(&cluster, FWS2)?;
    sighup(&cluster, FWS1)?;
    cluster.wait_for(FWS2, "FWC008", "reloaded", Duration::from_secs(3))?;
    cluster.wait_for(FWS1, "FWC008", "reloaded", Duration::from_secs(3))?;
    let received = wait_mails(&maildir, 2, Duration::from_secs(10));
    let subjects: Vec<&str> = received.iter().map(|m| m.subject.as_str()).collect();
    assert!(
        subjects.contains(&"NOTICE: [group0] changes to the active firewall")
            && subjects.contains(&"WARNING: [group0] is downed"),
        "{subjects:?}\n{}",
        cluster.all_logs()
    );
    // The reloads disturbed nothing: both daemons run, the group stayed where it was, and the
    // nodes still agree on the configuration.
    assert!(cluster.running(FWS1) && cluster.running(FWS2));
    assert_eq!(cluster.holder(FWS1, "group0")?.as_deref(), Some(FWS2));
    assert_eq!(cluster.lines_with(FWS2, "FWC201").len(), 1);
    assert!(cluster.lines_with(FWS1, "FWC106").is_empty());
    assert!(cluster.lines_with(FWS2, "FWC106").is_empty());
    Ok(())
}
