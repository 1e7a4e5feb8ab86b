//! The operator surface on a live two-node lab: the three `clpstat` screens against the seed's
//! layout, `--json` against the live state, `clpgrp` refusals and exit codes, socket
//! permissions, and the metrics endpoint.

use std::{
    io::{Read as _, Write as _},
    os::unix::fs::PermissionsExt as _,
    process::Command,
    time::Duration,
};

use fwcluster_lab::{
    Lab,
    cluster::{self, Cluster},
    seed::{self, FWS1, FWS2},
};

/// A 100 ms timeout: these tests are about the operator's tools, and with 30 ms the suite's own
/// load (tests run in parallel) now and then starved a daemon into a false OFFLINE.
const CONFIG: &str = concat!(
    r#"heartbeat_interval = "10ms"
heartbeat_timeout = "100ms"
wait_timeout = "3s"

[metrics]
listen = "127.0.0.1:9428"

"#,
    fwcluster_lab::seed_servers!(),
    r#"
[[group]]
name = "group0"
policy = ["fws1", "fws2"]

  [[group.fip]]
  address = "192.0.2.10/24"
  interface = "eth0"

  [[group.parp]]
  address = "192.0.2.20"
  interface = "eth0"

  [[group.ipw]]
  targets = ["192.0.2.254"]
  interval = "100ms"

  [[group.exec]]
  name = "ckcstat"
  start = "true"
  stop = "true"

  [[group.exec]]
  name = "ckfwalive"
  start = "exec sleep 1000"
  stop = "true"
  monitor = true
  retry = 2
  recover = "failover"
"#
);

fn started() -> anyhow::Result<(Lab, Cluster)> {
    let lab = seed::build()?;
    let mut cluster = Cluster::new(&lab, CONFIG)?;
    cluster.start(&lab, FWS1)?;
    cluster.start(&lab, FWS2)?;
    cluster.wait_holder(FWS2, "group0", FWS1, Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_millis(300));
    Ok((lab, cluster))
}

/// Compares a screen with the expected one line by line, field by field (runs of spaces and the
/// length of a rule line are layout, not content).
fn format_mac_upper(mac: [u8; 6]) -> String {
    fwcluster_lab::arp::format_mac(&mac).to_uppercase()
}

fn assert_screen(actual: &str, expected: &str) {
    let fields = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .map(|l| {
                l.split_whitespace()
                    .map(|f| {
                        if f.chars().all(|c| c == '-') {
                            "-----"
                        } else {
                            f
                        }
                    })
                    .map(str::to_owned)
                    .collect()
            })
            .collect()
    };
    let (a, e) = (fields(actual), fields(expected));
    for (i, (line_a, line_e)) in a.iter().zip(&e).enumerate() {
        assert_eq!(line_a, line_e, "line {} differs:\n{actual}", i + 1);
    }
    assert_eq!(a.len(), e.len(), "line count differs:\n{actual}");
}

#[test]
fn the_three_clpstat_screens_follow_the_seed_and_json_matches_the_live_state() -> anyhow::Result<()>
{
    let (lab, cluster) = started()?;
    let version = env!("CARGO_PKG_VERSION");
    let (ok, screen) = cluster.tool(&lab, FWS1, "clpstat", &["-s"])?;
    assert!(ok, "{screen}");
    assert_screen(
        &screen,
        &format!(
            "===== CLUSTER STATUS =====
* server0 : fws1 {version}
  server1 : fws2
server0 server1
-----
SERVER STATUS ONLINE ONLINE
GROUP0 STATUS ONLINE OFFLINE
POLICY 1st 2nd
STARTING ALLOW ALLOW
<A> group0-ipw0 ONLINE ONLINE
    192.0.2.254
<U> group0-fip0 ONLINE OFFLINE
    192.0.2.10/255.255.255.0
<U> group0-parp0 ONLINE OFFLINE
    192.0.2.20
<U> group0-exec0 ONLINE OFFLINE
    S: true
    E: true
<U> group0-exec1 ONLINE OFFLINE
    W: exec sleep 1000
    E: true
-----
XDP eth0 : GENERIC
"
        ),
    );
    // The screen from fws2 marks fws2 as local.
    let (_, screen) = cluster.tool(&lab, FWS2, "clpstat", &[])?;
    assert!(
        screen
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("  server0 : fws1"),
        "{screen}"
    );
    assert!(
        screen
            .lines()
            .nth(2)
            .unwrap()
            .starts_with("* server1 : fws2"),
        "{screen}"
    );

    let (_, screen) = cluster.tool(&lab, FWS1, "clpstat", &["-n"])?;
    assert_screen(
        &screen,
        "===== INTERCONNECT INFORMATION =====
server0 : fws1
server1 : fws2

[on server0 : ONLINE]
address server0 server1
-----
169.254.12.1 OK OK
203.0.113.1 OK OK

[on server1 : ONLINE]
address server0 server1
-----
169.254.12.2 OK OK
203.0.113.2 OK OK
",
    );

    // The monitored process of group0-exec1 (started by the activation).
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let pid = loop {
        if let Some(pid) = cluster.status(FWS1)?.exec_pids.get("group0-exec1") {
            break *pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            cluster.all_logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let (_, screen) = cluster.tool(&lab, FWS1, "clpstat", &["-i"])?;
    for expected in [
        "===== CLUSTER INFORMATION =====",
        "SERVER : fws1",
        "WAIT timeout : 3s",
        "HB port : 28002",
        "HB interval : 10ms",
        "HB timeout : 100ms",
        "API port : 28001",
        "RECOVER : RESTART",
        "RETRY count : 5",
        "SERVER0 : fws1",
        "INTERCONNECT0 : 169.254.12.1/255.255.255.0",
        "INTERCONNECT1 : 203.0.113.2/255.255.255.0",
        "GROUP0 : group0",
        "START : AUTO",
        "STARTUP : AUTO",
        "FAILBACK : MANUAL",
        "ENVIRONMENT : ACT_NORMAL",
        "RECOVER : IGNORE",
        "RETRY count : 0/0",
        "FAILOVER policy : 0:fws1 1:fws2",
        "IPW0 : group0-ipw0",
        "TYPE : ASR",
        "POLLING address : 192.0.2.254",
        "RECOVER : FAILOVER",
        "RETRY count : 2/2",
        "FIP0 : group0-fip0",
        "ADDRESS : 192.0.2.10/255.255.255.0",
        "INTERFACE : eth0:1",
        "PING count : 0",
        "ARP count : 1",
        "RETRY count : 5/5",
        "PARP0 : group0-parp0",
        "IP ADDRESS : 192.0.2.20",
        &format!("MAC ADDRESS : {}", format_mac_upper(lab.mac(FWS1, "eth0")?)),
        "EXEC0 : group0-exec0",
        "POLLING : NO",
        "RECOVER : STOP",
        "EXEC1 : group0-exec1",
        "ACT path : exec sleep 1000",
        "POLLING : YES",
        &format!("PID : {pid}"),
    ] {
        let normalized: Vec<String> = screen
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert!(
            normalized.iter().any(|l| l == expected),
            "{expected:?} missing:\n{screen}"
        );
    }

    // --json parses back and agrees with what the client sees.
    let (_, json) = cluster.tool(&lab, FWS2, "clpstat", &["--json"])?;
    let view: cluster_ctl::status::StatusView = serde_json::from_str(&json)?;
    assert_eq!(view.local, 1);
    assert_eq!(view.groups[0].states, ["ONLINE", "OFFLINE"]);
    assert_eq!(view.servers[0].status, "ONLINE");
    let answers = lab.arp_request(
        seed::INET_CLIENT,
        "eth0",
        seed::GROUP0_INET_FIP,
        Duration::from_millis(200),
    )?;
    assert_eq!(answers.len(), 1);
    assert_eq!(
        answers[0].mac,
        lab.mac(FWS1, "eth0")?,
        "the holder in --json answers"
    );
    Ok(())
}

#[test]
fn clpgrp_refuses_with_the_seed_rules_and_says_what_happened() -> anyhow::Result<()> {
    let (lab, cluster) = started()?;
    let run = |host: &str, args: &[&str]| cluster.tool(&lab, host, "clpgrp", args).unwrap();
    let (ok, out) = run(FWS2, &["-s", "-g", "group0"]);
    assert!(!ok);
    assert_eq!(out.trim(), "clpgrp: group0 is already started on fws1");
    let (ok, out) = run(FWS2, &["-t", "-g", "group0"]);
    assert!(!ok);
    assert_eq!(
        out.trim(),
        "clpgrp: group0 is not running on fws2 but on fws1; run the command there or use -h fws1"
    );
    let (ok, out) = run(FWS2, &["-m", "-g", "group0"]);
    assert!(!ok);
    assert!(
        out.contains("group0 is not running on fws2 but on fws1"),
        "{out}"
    );
    let (ok, out) = run(FWS1, &["-g", "nosuch", "-t"]);
    assert!(!ok);
    assert_eq!(out.trim(), "clpgrp: no group named nosuch");
    // Stop, then start elsewhere, each waiting for the result.
    let (ok, out) = run(FWS1, &["-t", "-g", "group0"]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "clpgrp: group0 stopped on fws1");
    let (ok, out) = run(FWS1, &["-t"]);
    assert!(!ok);
    assert_eq!(out.trim(), "clpgrp: group0 is not started on fws1");
    let (ok, out) = run(FWS2, &["-s"]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "clpgrp: group0 started on fws2");
    // The group stays stopped where an operator stopped it: it runs only on fws2.
    assert_eq!(cluster.holder(FWS1, "group0")?.as_deref(), Some(FWS2));
    Ok(())
}

#[test]
fn only_root_may_use_the_control_socket() -> anyhow::Result<()> {
    let (_lab, cluster) = started()?;
    let socket = cluster.socket(FWS1);
    let clpstat = cluster::binary("clpstat")?;
    let as_nobody = |socket: &std::path::Path| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&clpstat)
            .arg("--socket")
            .arg(socket)
            .output()
            .unwrap()
    };
    // The socket is 0600 in a 0700 directory: nobody cannot even connect.
    let out = as_nobody(&socket);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    assert!(stderr.contains("cannot reach fwclusterd"), "{stderr}");
    // Even with the file modes opened up, the daemon checks the peer's credentials.
    std::fs::set_permissions(
        socket.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))?;
    let out = as_nobody(&socket);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("permission denied: only root"), "{stderr}");
    // A daemon that is not running: one line, non-zero exit.
    let out = Command::new(&clpstat)
        .args(["--socket", "/nonexistent/fws9.sock"])
        .output()?;
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    Ok(())
}

#[test]
fn hostile_control_requests_get_an_error_and_do_not_stall_the_daemon() -> anyhow::Result<()> {
    let (_lab, cluster) = started()?;
    let socket = cluster.socket(FWS1);
    // Garbage.
    let mut stream = std::os::unix::net::UnixStream::connect(&socket)?;
    stream.write_all(b"{not json}\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    assert!(answer.contains("malformed request"), "{answer}");
    // Too large.
    let mut stream = std::os::unix::net::UnixStream::connect(&socket)?;
    let _ = stream.write_all(&vec![b'x'; 70 * 1024]);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.contains("larger than"), "{answer}");
    // A client that connects and says nothing does not block others.
    let _silent = std::os::unix::net::UnixStream::connect(&socket)?;
    assert_eq!(cluster.holder(FWS1, "group0")?.as_deref(), Some(FWS1));
    Ok(())
}

#[test]
fn the_metrics_endpoint_exports_state_takeovers_and_counters() -> anyhow::Result<()> {
    let (lab, mut cluster) = started()?;
    let scrape = |host: &str| -> String {
        let output = lab
            .command(host, "bash")
            .args(["-c", "exec 3<>/dev/tcp/127.0.0.1/9428; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let text = scrape(FWS1);
    assert!(text.starts_with("HTTP/1.0 200 OK"), "{text}");
    assert!(
        text.contains("fwcluster_group_online{group=\"group0\",server=\"fws1\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("fwcluster_server_online{server=\"fws2\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("fwcluster_interconnect_up{peer=\"fws2\",link=\"1\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("fwcluster_xdp_packets_total{kind=\"arp_requests\"}"),
        "{text}"
    );
    cluster.kill(FWS1)?;
    cluster.wait_holder(FWS2, "group0", FWS2, Duration::from_secs(3))?;
    let text = scrape(FWS2);
    assert!(
        text.contains("fwcluster_takeovers_total{group=\"group0\",cause=\"peer_down\"} 1"),
        "{text}\n{}",
        cluster.all_logs()
    );
    Ok(())
}

#[test]
fn dash_h_reaches_the_other_server_through_the_peer_api() -> anyhow::Result<()> {
    let (lab, cluster) = started()?;
    let (ok, screen) = cluster.tool(&lab, FWS1, "clpstat", &["-s", "-h", "fws2"])?;
    assert!(ok, "{screen}");
    assert!(
        screen
            .lines()
            .nth(2)
            .unwrap()
            .starts_with("* server1 : fws2"),
        "{screen}"
    );
    // A move must be issued where the group runs: from fws2, name fws1 with -h.
    let (ok, out) = cluster.tool(&lab, FWS2, "clpgrp", &["-m", "-h", "fws1", "-g", "group0"])?;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "clpgrp: group0 moved from fws1 to fws2");
    let (ok, out) = cluster.tool(&lab, FWS2, "clpstat", &["-h", "fws9"])?;
    assert!(!ok);
    assert!(out.contains("no server named fws9"), "{out}");
    Ok(())
}

/// Speaks the peer API by hand from fws2 to fws1's daemon.
fn api_exchange(lab: &Lab, signed_for: impl FnOnce(&str) -> String + Send + 'static) -> String {
    fwcluster_lab::in_netns(lab.ns(FWS2), move || {
        use std::io::BufRead as _;
        let stream = std::net::TcpStream::connect("169.254.12.1:28001").unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let challenge: serde_json::Value = serde_json::from_str(&line).unwrap();
        let mut writer = stream;
        writer
            .write_all(
                format!("{}\n", signed_for(challenge["challenge"].as_str().unwrap())).as_bytes(),
            )
            .unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        answer
    })
    .unwrap()
}

fn sign(key: &cluster_ctl::heartbeat::wire::Key, challenge: &str, request: &str) -> String {
    let mut data = Vec::new();
    for part in [challenge.as_bytes(), b"fws2", request.as_bytes()] {
        data.extend_from_slice(&(part.len() as u32).to_be_bytes());
        data.extend_from_slice(part);
    }
    format!(
        "{{\"node\":\"fws2\",\"request\":{request},\"tag\":\"{}\"}}",
        hex::encode(key.tag(&data))
    )
}

#[test]
fn the_peer_api_refuses_a_wrong_key_and_a_replayed_request() -> anyhow::Result<()> {
    let (lab, cluster) = started()?;
    let key = cluster_ctl::heartbeat::load_key(&cluster.dir.path().join("cluster.key")).unwrap();
    let request = r#"{"request":"status"}"#;
    // The right key answers.
    let good_key = key.clone();
    let answer = api_exchange(&lab, move |c| sign(&good_key, c, request));
    assert!(answer.contains("\"response\":\"status\""), "{answer}");
    // Another key does not.
    let wrong =
        cluster_ctl::heartbeat::wire::Key::new(b"some other key of 16+ bytes".to_vec()).unwrap();
    let answer = api_exchange(&lab, move |c| sign(&wrong, c, request));
    assert!(answer.contains("authentication failed"), "{answer}");
    // A request recorded for one challenge is refused on the next connection.
    let recorded = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let record = recorded.clone();
    let signing_key = key.clone();
    let first = api_exchange(&lab, move |c| {
        let line = sign(
            &signing_key,
            c,
            r#"{"request":"group","op":"stop","group":"group0"}"#,
        );
        *record.lock().unwrap() = line.clone();
        line
    });
    assert!(first.contains("accepted"), "{first}");
    cluster.wait_for(
        FWS1,
        "FWC202",
        "group0 is not active on fws1",
        Duration::from_secs(3),
    )?;
    let replay = recorded.lock().unwrap().clone();
    let answer = api_exchange(&lab, move |_| replay);
    assert!(answer.contains("authentication failed"), "{answer}");
    Ok(())
}

/// Whether any interface of `host` has an XDP program attached.
fn xdp_attached(lab: &Lab, host: &str) -> anyhow::Result<bool> {
    let output = lab.run(host, "ip", &["-j", "link", "show"])?;
    let links: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    Ok(links
        .as_array()
        .into_iter()
        .flatten()
        .any(|link| link.get("xdp").is_some()))
}

#[test]
fn clpcfg_uninstall_is_refused_while_the_daemon_runs_then_detaches_and_unpins() -> anyhow::Result<()>
{
    let (lab, mut cluster) = started()?;
    let pins = lab.pin_root().join(FWS1);
    let config = cluster.config.to_str().unwrap().to_owned();
    let uninstall = ["uninstall", "--config", config.as_str()];

    let (ok, output) = cluster.tool(&lab, FWS1, "clpcfg", &uninstall)?;
    assert!(!ok && output.contains("stop it first"), "{output}");
    assert!(pins.join("prog").exists() && xdp_attached(&lab, FWS1)?);

    // A clean stop leaves the data path pinned and attached, for the next start to adopt.
    cluster.stop(FWS1, Duration::from_secs(10))?;
    assert!(pins.join("prog").exists() && xdp_attached(&lab, FWS1)?);

    let (ok, output) = cluster.tool(&lab, FWS1, "clpcfg", &uninstall)?;
    assert!(
        ok && output.contains("the XDP program is detached"),
        "{output}"
    );
    assert!(!pins.exists(), "pins left in {}", pins.display());
    assert!(!xdp_attached(&lab, FWS1)?, "a program is still attached");

    let (ok, output) = cluster.tool(&lab, FWS1, "clpcfg", &uninstall)?;
    assert!(ok && output.contains("nothing installed"), "{output}");
    Ok(())
}
