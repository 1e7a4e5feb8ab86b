//! Alert mail through a real SMTP server (Debian's aiosmtpd) on the upstream router.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant, SystemTime},
};

use fwcluster_lab::{
    Lab,
    cluster::Cluster,
    seed::{self, FWS1, FWS2, UPSTREAM},
};

const CONFIG: &str = r#"heartbeat_interval = "10ms"
heartbeat_timeout = "30ms"
wait_timeout = "3s"

[mail]
smtp = "smtp://192.0.2.254:2525"
from = "cluster@fws.example"
to = ["admin@example.com"]
outbox = "{dir}/outbox"

[[server]]
name = "fws1"
interconnect = ["169.254.12.1/24", "203.0.113.1/24"]

[[server]]
name = "fws2"
interconnect = ["169.254.12.2/24", "203.0.113.2/24"]

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
"#;

struct Smtp(Child);

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn smtp(lab: &Lab, maildir: &Path) -> anyhow::Result<Smtp> {
    let child = lab
        .command(UPSTREAM, "/usr/bin/python3")
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            "192.0.2.254:2525",
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(maildir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(700));
    Ok(Smtp(child))
}

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

struct Mail {
    subject: String,
    date: SystemTime,
    body: String,
}

fn mails(maildir: &Path) -> Vec<Mail> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(maildir.join("new"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|text| {
            let header = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                    .unwrap_or_default()
                    .to_owned()
            };
            let date = httpdate_parse(&header("Date"));
            let body = text
                .split_once("\n\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default();
            Mail {
                subject: header("Subject"),
                date,
                body,
            }
        })
        .collect()
}

/// RFC 2822 dates as lettre writes them (`Tue, 25 Nov 2026 03:50:15 +0000`).
fn httpdate_parse(date: &str) -> SystemTime {
    let gmt = date.replace("+0000", "GMT");
    humantime::parse_rfc3339_weak(&to_rfc3339(&gmt).unwrap_or_default())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn to_rfc3339(date: &str) -> Option<String> {
    let parts: Vec<&str> = date.split_whitespace().collect();
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let name = *parts.get(2)?;
    let month = months.iter().position(|m| *m == name)? + 1;
    Some(format!(
        "{}-{:02}-{:02}T{}",
        parts.get(3)?,
        month,
        parts.get(1)?.parse::<u32>().ok()?,
        parts.get(4)?
    ))
}

fn wait_mails(maildir: &Path, count: usize, timeout: Duration) -> Vec<Mail> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = mails(maildir);
        if found.len() >= count || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn failover_mails_arrive_and_queued_mails_survive_a_down_server_and_a_restart() -> anyhow::Result<()>
{
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
