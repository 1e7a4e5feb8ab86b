//! `clpcfg`: the wizard, check, keygen and the nftables snippet, through the real binary.

use std::{
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Command, Stdio},
};

use cluster_ctl::{cli::clpcfg::Wizard, config::Config, heartbeat::load_key};

const LOAD_SHARE_ANSWERS: &str = "\
y
fws_cluster
1s
5s
10s
28001
28002
/etc/fwcluster/cluster.key
fws1
a
169.254.12.1/24
a
203.0.113.1/24

fws2
a
169.254.12.2/24
l
a
203.0.113.2/24

fws1
n
a
192.0.2.10/24 eth0 hide 203.0.113.0/25
a
198.51.100.10/24 eth1
a
203.0.113.99/24 eth2
m
3
203.0.113.10/24 eth2

a
192.0.2.254

a
192.0.2.20 eth0 nat 198.51.100.100


fws2
n
a
192.0.2.11/24 eth0 hide 203.0.113.128/25
a
198.51.100.77/24 eth1
a
203.0.113.11/24 eth2
m
2
198.51.100.11/24 eth1

a
192.0.2.254

a
192.0.2.21 eth0 nat 198.51.100.101



";

fn example(name: &str) -> Config {
    Config::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config")
            .join(name),
    )
    .unwrap()
}

#[test]
fn the_wizard_builds_the_load_share_example_from_the_seed_answers() {
    let mut screen = Vec::new();
    let config = Wizard::new(LOAD_SHARE_ANSWERS.as_bytes(), &mut screen)
        .run()
        .unwrap();
    assert_eq!(config, example("load-share.toml"));
    let screen = String::from_utf8(screen).unwrap();
    assert!(screen.contains("Input HB interval [1s] : "), "{screen}");
    assert!(screen.contains("[a/m/d/l/Enter] : "), "{screen}");
    assert!(
        screen.contains("  1: 169.254.12.2/24"),
        "the l command lists: {screen}"
    );
}

#[test]
fn the_wizard_checks_each_answer_as_it_is_given_and_takes_the_seeds_forms() {
    let answers = LOAD_SHARE_ANSWERS
        // An FQDN is refused at once and asked again.
        .replacen("fws1\na\n", "fws1.example.com\nfws1\na\n", 1)
        // A WAIT timeout not above the HB timeout.
        .replacen("10s\n", "5s\n10s\n", 1)
        // A dotted netmask, as the seed's dialog takes it.
        .replacen("169.254.12.1/24", "169.254.12.1 255.255.255.0", 1)
        // A bad address: said, and the list goes on.
        .replacen(
            "a\n198.51.100.10/24 eth1\n",
            "a\n198.51.100.300/24 eth1\na\n198.51.100.10/24 eth1\n",
            1,
        )
        // `m N` on one line.
        .replacen("m\n3\n", "m 3\n", 1);
    let mut screen = Vec::new();
    let config = Wizard::new(answers.as_bytes(), &mut screen).run().unwrap();
    assert_eq!(config, example("load-share.toml"));
    let screen = String::from_utf8(screen).unwrap();
    for said in [
        "\"fws1.example.com\" is an FQDN",
        "\"5s\": must be longer than 5s",
        "198.51.100.300/24",
    ] {
        assert!(screen.contains(said), "{said:?} not in:\n{screen}");
    }
    // The mode is the first question, as in the seed.
    assert!(
        screen.starts_with("---- START fwcluster configuration ----\nuse load share? (y/n) [n] : "),
        "{screen}"
    );
}

#[test]
fn the_wizard_asks_again_after_a_bad_answer_and_refuses_truncated_input() {
    let answers = LOAD_SHARE_ANSWERS.replacen("1s\n", "one second\n1s\n", 1);
    let mut screen = Vec::new();
    let config = Wizard::new(answers.as_bytes(), &mut screen).run().unwrap();
    assert_eq!(config, example("load-share.toml"));
    assert!(
        String::from_utf8(screen)
            .unwrap()
            .contains("\"one second\"")
    );
    let error = Wizard::new("fws_cluster\n".as_bytes(), Vec::new())
        .run()
        .unwrap_err();
    assert!(error.to_string().contains("input ended"), "{error}");
}

fn clpcfg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_clpcfg"))
}

#[test]
fn init_through_a_pipe_writes_a_file_that_check_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.toml");
    let mut child = clpcfg()
        .args(["init", "-o"])
        .arg(&file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(LOAD_SHARE_ANSWERS.as_bytes())
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    let check = clpcfg().arg("check").arg(&file).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(Config::load(&file).unwrap(), example("load-share.toml"));
}

#[test]
fn check_fails_with_one_line_per_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[cluster]\nname = \"c\"\nheartbeat_interval = \"5s\"\nheartbeat_timeout = \"1s\"\n\n[[server]]\nname = \"a.example\"\ninterconnect = [\"169.254.1.1/24\"]\n",
    )
    .unwrap();
    let check = clpcfg().arg("check").arg(&file).output().unwrap();
    assert!(!check.status.success());
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains("bad.toml:4: cluster.heartbeat_timeout"),
        "{stderr}"
    );
    assert!(stderr.contains("bad.toml:7: server[0].name"), "{stderr}");
}

#[test]
fn keygen_writes_a_private_key_that_the_daemon_accepts_and_guards_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    assert!(clpcfg().arg("keygen").arg(&key).status().unwrap().success());
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    load_key(&key).unwrap();
    // No silent overwrite.
    assert!(!clpcfg().arg("keygen").arg(&key).status().unwrap().success());
    // A key readable by others is refused.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = load_key(&key).unwrap_err().to_string();
    assert!(error.contains("chmod 600"), "{error}");
}

#[test]
fn the_nft_chains_load_inside_an_operators_table_with_the_nat_of_every_group() {
    let out = clpcfg()
        .arg("nft")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/load-share.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let fragment = String::from_utf8(out.stdout).unwrap();
    // No table and no base chain of its own: it goes inside the operator's table.
    let rules: String = fragment
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    assert!(
        !rules.contains("table ") && !rules.contains("hook "),
        "{fragment}"
    );
    for expected in [
        "elements = { 169.254.12.1, 169.254.12.2, 203.0.113.1, 203.0.113.2 }",
        "ip saddr @fwcluster_peers ip daddr @fwcluster_peers udp dport 28002 counter accept",
        "ip saddr @fwcluster_peers ip daddr @fwcluster_peers tcp dport 28001 counter accept",
        "ip saddr @fwcluster_peers counter drop",
        "ip daddr @fwcluster_addresses counter drop",
        "oifname \"eth0\" ip saddr 203.0.113.0/25 snat ip to 192.0.2.10",
        "oifname \"eth0\" ip saddr 203.0.113.128/25 snat ip to 192.0.2.11",
        "ip daddr 192.0.2.20 dnat ip to 198.51.100.100",
        "oifname \"eth0\" ip saddr 198.51.100.100 snat ip to 192.0.2.20",
    ] {
        assert!(
            fragment.contains(expected),
            "missing {expected:?} in:\n{fragment}"
        );
    }
    assert_loads_in_the_example_firewall(&fragment);
}

/// The example firewall with `fragment` included is valid nftables (`nft -c` checks without
/// loading).
fn assert_loads_in_the_example_firewall(fragment: &str) {
    let dir = tempfile::tempdir().unwrap();
    let fragment_file = dir.path().join("cluster.nft");
    std::fs::write(&fragment_file, fragment).unwrap();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/firewall.nft"),
    )
    .unwrap()
    .replace(
        "/etc/fwcluster/cluster.nft",
        &fragment_file.display().to_string(),
    );
    let file = dir.path().join("firewall.nft");
    std::fs::write(&file, &example).unwrap();
    let check = Command::new("nft")
        .arg("-c")
        .arg("-f")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn the_nft_chains_cover_ipv6_interconnects_and_addresses_and_let_neighbor_discovery_in() {
    let dir = tempfile::tempdir().unwrap();
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/load-share.toml"),
    )
    .unwrap()
    .replacen(
        "  [[group.fip]]",
        "  [[group.fip]]\n  address = \"2001:db8::10/64\"\n  interface = \"eth0\"\n\n  [[group.fip]]",
        1,
    )
    // The first interconnect over IPv6.
    .replace("\"169.254.12.1/24\"", "\"fd00:12::1/64\"")
    .replace("\"169.254.12.2/24\"", "\"fd00:12::2/64\"");
    let config = dir.path().join("dual-stack.toml");
    std::fs::write(&config, &source).unwrap();
    let out = clpcfg().arg("nft").arg(&config).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fragment = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "set fwcluster_addresses6 {\n\ttype ipv6_addr",
        "elements = { 2001:db8::10 }",
        "ip6 daddr @fwcluster_addresses6 counter drop",
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 counter accept",
        "icmpv6 type mld-listener-query ip6 hoplimit 1 ip6 saddr fe80::/10 counter accept",
        "set fwcluster_peers6 {\n\ttype ipv6_addr",
        "elements = { fd00:12::1, fd00:12::2 }",
        "elements = { 203.0.113.1, 203.0.113.2 }",
        "ip6 saddr @fwcluster_peers6 ip6 daddr @fwcluster_peers6 udp dport 28002 counter accept",
        "ip6 saddr @fwcluster_peers6 ip6 daddr @fwcluster_peers6 tcp dport 28001 counter accept",
        "ip6 saddr @fwcluster_peers6 counter drop",
        "ip6 saddr @fwcluster_peers6 ip6 daddr @fwcluster_peers6 tcp sport 28001 accept",
    ] {
        assert!(
            fragment.contains(expected),
            "missing {expected:?} in:\n{fragment}"
        );
    }
    // Neighbor Discovery is let in before the stealth rule drops what is for this node.
    let accept = fragment.find("nd-neighbor-solicit").unwrap();
    let stealth = fragment.find("jump fwcluster_stealth\n").unwrap();
    assert!(accept < stealth, "{fragment}");
    assert_loads_in_the_example_firewall(&fragment);
}
