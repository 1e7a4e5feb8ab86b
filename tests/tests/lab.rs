//! The lab harness itself: cleanup, faults and helpers.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use fwcluster_lab::{
    Direction, existing_lab_namespaces, freeze,
    seed::{self, FWS1, FWS2, FWS2_INTERCONNECT, IC_IF, INET_CLIENT, INET_IF},
    thaw, xdp,
};

fn namespaces_of(prefix: &str) -> Vec<String> {
    existing_lab_namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect()
}

#[test]
fn a_panicking_test_leaves_no_namespace_link_or_pin() {
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = seed::build().expect("lab");
        let (_dataplane, attachments) = xdp::open_node(&lab, FWS1, 0, &[INET_IF]).expect("xdp");
        assert_eq!(attachments.len(), 1);
        assert!(lab.pin_root().join(FWS1).join("prog").exists());
        seen = Some((lab.prefix().to_owned(), lab.pin_root(), lab.namespaces()));
        panic!("midway");
    }));
    assert!(result.is_err());
    let (prefix, pins, namespaces) = seen.expect("the lab was built");
    assert_eq!(namespaces.len(), 8);
    assert!(
        namespaces_of(&prefix).is_empty(),
        "namespaces left: {:?}",
        namespaces_of(&prefix)
    );
    assert!(!pins.exists(), "pins left in {}", pins.display());
}

#[test]
fn leftovers_of_a_killed_run_are_removed_by_the_next_lab() -> anyhow::Result<()> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fwlab"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first)?;
    let prefix = first
        .strip_prefix("ready ")
        .map(|p| p.trim().to_owned())
        .expect("fwlab prints its prefix");
    // Leave a pin behind too, as a crashed daemon would.
    let pins = Path::new("/sys/fs/bpf").join(&prefix);
    std::fs::create_dir_all(pins.join("fws1"))?;
    assert_eq!(namespaces_of(&prefix).len(), 8);
    child.kill()?;
    child.wait()?;
    assert_eq!(namespaces_of(&prefix).len(), 8, "SIGKILL runs no cleanup");

    let _next = seed::build()?;
    assert!(namespaces_of(&prefix).is_empty());
    assert!(!pins.exists());
    Ok(())
}

#[test]
fn loss_cut_and_restore_act_on_one_link() -> anyhow::Result<()> {
    let lab = seed::build()?;
    let fws2_ic = FWS2_INTERCONNECT[0];
    assert_eq!(lab.ping(FWS1, fws2_ic, 2)?, 2);

    lab.set_loss(FWS1, IC_IF, 100, Direction::FromHost)?;
    assert_eq!(lab.ping(FWS1, fws2_ic, 2)?, 0);
    // Only that link: the internet side still works.
    assert_eq!(lab.ping(INET_CLIENT, "192.0.2.1".parse()?, 1)?, 1);
    lab.set_loss(FWS1, IC_IF, 0, Direction::FromHost)?;
    assert_eq!(lab.ping(FWS1, fws2_ic, 2)?, 2);

    lab.set_loss(FWS2, IC_IF, 100, Direction::ToHost)?;
    assert_eq!(lab.ping(FWS1, fws2_ic, 1)?, 0);
    lab.set_loss(FWS2, IC_IF, 0, Direction::Both)?;

    lab.cut(FWS2, INET_IF)?;
    assert_eq!(lab.ping(INET_CLIENT, "192.0.2.2".parse()?, 1)?, 0);
    lab.restore(FWS2, INET_IF)?;
    assert_eq!(lab.ping(INET_CLIENT, "192.0.2.2".parse()?, 2)?, 2);

    lab.cut_host(FWS1)?;
    assert_eq!(lab.ping(INET_CLIENT, "192.0.2.1".parse()?, 1)?, 0);
    assert_eq!(lab.ping(FWS2, "169.254.12.1".parse()?, 1)?, 0);
    lab.restore_host(FWS1)?;
    assert_eq!(lab.ping(FWS2, "169.254.12.1".parse()?, 2)?, 2);
    Ok(())
}

#[test]
fn arp_helper_reports_the_kernel_answer_with_its_timing() -> anyhow::Result<()> {
    let lab = seed::build()?;
    let wait = Duration::from_millis(200);
    let answers = lab.arp_request(INET_CLIENT, "eth0", "192.0.2.2".parse()?, wait)?;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].mac, lab.mac(FWS2, INET_IF)?);
    assert!(answers[0].elapsed < wait);
    // Nobody has this address.
    assert!(
        lab.arp_request(INET_CLIENT, "eth0", "192.0.2.99".parse()?, wait)?
            .is_empty()
    );
    Ok(())
}

fn process_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The state follows the parenthesised command name.
    stat.rsplit_once(") ").unwrap().1.chars().next().unwrap()
}

#[test]
fn commands_run_inside_their_namespace_and_can_be_frozen() -> anyhow::Result<()> {
    let lab = seed::build()?;
    let links = lab.run(FWS1, "ip", &["-o", "link", "show"])?;
    let links = String::from_utf8(links.stdout)?;
    assert!(links.contains("eth3"), "{links}");
    let output = lab.run(INET_CLIENT, "ip", &["-o", "link", "show"])?;
    assert!(!String::from_utf8(output.stdout)?.contains("eth3"));

    let mut sleeper = lab.command(FWS1, "sleep").arg("30").spawn()?;
    let pid = sleeper.id();
    std::thread::sleep(Duration::from_millis(50));
    freeze(pid)?;
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(process_state(pid), 'T');
    thaw(pid)?;
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(process_state(pid), 'S');
    sleeper.kill()?;
    sleeper.wait()?;
    Ok(())
}
