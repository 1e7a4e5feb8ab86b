//! Configuration loading and validation: the examples load, and every rule names key and line.

use std::path::{Path, PathBuf};

use cluster_ctl::config::{Config, ConfigErrors, Failback, Recover, StartMode};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(name)
}

#[test]
fn the_example_files_load_with_the_seed_defaults() {
    for name in ["hot-standby.toml", "load-share.toml", "flow-share.toml"] {
        Config::load(&example(name)).unwrap_or_else(|e| panic!("{name}:\n{e}"));
    }
    let hot = Config::load(&example("hot-standby.toml")).unwrap();
    assert_eq!(hot.cluster.heartbeat_interval.as_secs(), 1);
    assert_eq!(hot.cluster.heartbeat_timeout.as_secs(), 5);
    assert_eq!(
        (hot.cluster.api_port, hot.cluster.heartbeat_port),
        (28001, 28002)
    );
    let group = &hot.group[0];
    assert_eq!(
        (group.failback, group.start),
        (Failback::Manual, StartMode::Auto)
    );
    assert_eq!((group.fip[0].ping_count, group.fip[0].arp_count), (0, 1));
    assert_eq!(
        (group.fip[0].recover, group.fip[0].retry),
        (Recover::Retry, 5)
    );
    assert_eq!(
        (group.ipw[0].recover, group.ipw[0].retry),
        (Recover::Failover, 2)
    );
    assert_eq!(
        (group.exec[0].recover, group.exec[0].retry),
        (Recover::Stop, 0)
    );
    assert_eq!(
        (group.exec[1].recover, group.exec[1].retry),
        (Recover::Failover, 2)
    );
    let load_share = Config::load(&example("load-share.toml")).unwrap();
    assert_eq!(load_share.group[1].policy, ["fws2", "fws1"]);
}

#[test]
fn the_digest_is_equal_for_equal_configurations_and_differs_otherwise() {
    let a = Config::load(&example("hot-standby.toml")).unwrap();
    let source = std::fs::read_to_string(example("hot-standby.toml")).unwrap();
    // Comments do not matter; values do.
    let reformatted = format!("# another comment\n{source}");
    let b = Config::parse(Path::new("b.toml"), &reformatted).unwrap();
    assert_eq!(a.digest(), b.digest());
    let changed = source.replace("heartbeat_timeout = \"5s\"", "heartbeat_timeout = \"6s\"");
    let c = Config::parse(Path::new("c.toml"), &changed).unwrap();
    assert_ne!(a.digest(), c.digest());
    assert_eq!(a.changed_sections(&c), ["cluster"]);
    // Mail settings are reloaded live, one node after the other: they do not change the
    // digest the nodes compare.
    let mail = source.replace("smtp://127.0.0.1:25", "smtp://192.0.2.99:25");
    let d = Config::parse(Path::new("d.toml"), &mail).unwrap();
    assert_eq!(a.digest(), d.digest());
    assert_eq!(a.changed_sections(&d), ["mail"]);
}

const BASE: &str = r#"
[cluster]
name = "c1"
heartbeat_interval = "1s"
heartbeat_timeout = "5s"
wait_timeout = "10s"

[[server]]
name = "fws1"
interconnect = ["169.254.12.1/24"]

[[server]]
name = "fws2"
interconnect = ["169.254.12.2/24"]

[[group]]
name = "group0"
policy = ["fws1", "fws2"]

  [[group.fip]]
  address = "192.0.2.10/24"
  interface = "eth0"

  [[group.parp]]
  address = "192.0.2.20"
  interface = "eth0"
"#;

fn errors_of(source: &str) -> ConfigErrors {
    Config::parse(Path::new("test.toml"), source).expect_err("must be refused")
}

/// Asserts an error with `key` and `message` at the first line that contains `line_text`.
fn assert_error(source: &str, key: &str, message: &str, line_text: &str) {
    let errors = errors_of(source);
    let line = source
        .lines()
        .position(|l| l.contains(line_text))
        .expect("line text in source")
        + 1;
    assert!(
        errors
            .0
            .iter()
            .any(|e| e.key == key && e.message.contains(message) && e.line == Some(line)),
        "expected {key} at line {line} containing {message:?}, got:\n{errors}"
    );
    let text = errors.to_string();
    assert!(
        text.contains(&format!("test.toml:{line}: {key}: ")),
        "{text}"
    );
}

#[test]
fn the_base_is_valid() {
    Config::parse(Path::new("test.toml"), BASE).unwrap();
}

#[test]
fn timeout_not_above_interval_is_refused() {
    let source = BASE.replace("heartbeat_timeout = \"5s\"", "heartbeat_timeout = \"1s\"");
    assert_error(
        &source,
        "cluster.heartbeat_timeout",
        "must be greater than heartbeat_interval",
        "heartbeat_timeout",
    );
}

#[test]
fn wait_not_above_timeout_is_refused() {
    let source = BASE.replace("wait_timeout = \"10s\"", "wait_timeout = \"5s\"");
    assert_error(
        &source,
        "cluster.wait_timeout",
        "must be greater than heartbeat_timeout",
        "wait_timeout",
    );
}

#[test]
fn an_fqdn_server_name_is_refused() {
    let source = BASE.replace("name = \"fws2\"", "name = \"fws2.example.com\"");
    assert_error(&source, "server[1].name", "is an FQDN", "fws2.example.com");
}

#[test]
fn an_unknown_server_in_a_policy_is_refused() {
    let source = BASE.replace(
        "policy = [\"fws1\", \"fws2\"]",
        "policy = [\"fws1\",\n  \"fws3\"]",
    );
    assert_error(
        &source,
        "group[0].policy[1]",
        "unknown server \"fws3\"",
        "\"fws3\"]",
    );
}

#[test]
fn more_than_sixteen_interconnects_are_refused() {
    let many: Vec<String> = (1..=17).map(|i| format!("\"169.254.{i}.1/24\"")).collect();
    let source = BASE.replace(
        "interconnect = [\"169.254.12.1/24\"]",
        &format!("interconnect = [{}]", many.join(", ")),
    );
    assert_error(
        &source,
        "server[0].interconnect",
        "at most 16",
        "169.254.17.1",
    );
}

#[test]
fn duplicate_addresses_are_refused() {
    let source = BASE.replace(
        "address = \"192.0.2.20\"",
        "address = \"192.0.2.10\" # duplicate",
    );
    assert_error(
        &source,
        "group[0].parp[0].address",
        "192.0.2.10 is also used by group[0].fip[0].address",
        "# duplicate",
    );
}

#[test]
fn a_proxy_arp_address_in_two_groups_is_refused() {
    let source = format!(
        "{BASE}\n[[group]]\nname = \"group1\"\npolicy = [\"fws2\", \"fws1\"]\n\n  [[group.parp]]\n  address = \"192.0.2.20\" # again\n  interface = \"eth0\"\n"
    );
    assert_error(
        &source,
        "group[1].parp[0].address",
        "also in group group0",
        "# again",
    );
}

#[test]
fn interconnects_outside_a_common_subnet_are_refused() {
    let source = BASE.replace("\"169.254.12.2/24\"", "\"169.254.99.2/24\"");
    assert_error(
        &source,
        "server[1].interconnect[0]",
        "is not in the subnet 169.254.12.0/24",
        "169.254.99.2",
    );
}

#[test]
fn an_fip_without_a_prefix_is_refused() {
    let source = BASE.replace("\"192.0.2.10/24\"", "\"192.0.2.10/32\"");
    assert_error(
        &source,
        "group[0].fip[0].address",
        "needs the prefix",
        "192.0.2.10/32",
    );
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let source = BASE.replace(
        "  interface = \"eth0\"\n\n  [[group.parp]]",
        "  interface = \"eth0\"\n  arp_cuont = 3\n\n  [[group.parp]]",
    );
    let errors = errors_of(&source);
    let line = source
        .lines()
        .position(|l| l.contains("arp_cuont"))
        .unwrap()
        + 1;
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].line, Some(line), "{errors}");
    assert!(errors.0[0].message.contains("arp_cuont"), "{errors}");
}

#[test]
fn bad_values_are_refused_with_their_line() {
    let source = BASE.replace(
        "heartbeat_interval = \"1s\"",
        "heartbeat_interval = \"one second\"",
    );
    let errors = errors_of(&source);
    let line = source
        .lines()
        .position(|l| l.contains("one second"))
        .unwrap()
        + 1;
    assert_eq!(errors.0[0].line, Some(line), "{errors}");
    let source = BASE.replace("\"192.0.2.10/24\"", "\"192.0.2.300/24\"");
    let errors = errors_of(&source);
    let line = source
        .lines()
        .position(|l| l.contains("192.0.2.300"))
        .unwrap()
        + 1;
    assert_eq!(errors.0[0].line, Some(line), "{errors}");
}

#[test]
fn a_unicast_flow_share_mac_is_refused() {
    let source = format!(
        "{BASE}\n[[flowshare]]\nname = \"ls0\"\naddress = \"192.0.2.30/24\"\ninterface = \"eth0\"\nmac = \"02:00:5e:00:02:1e\"\n"
    );
    assert_error(
        &source,
        "flowshare[0].mac",
        "not a multicast MAC",
        "02:00:5e",
    );
}

#[test]
fn a_flow_share_dealing_with_anothers_buckets_must_name_one_that_hashes_alike_and_symmetric() {
    let share = |name: &str, interface: &str, hash: &str, extra: &str| {
        format!(
            "\n[[flowshare]]\nname = \"{name}\"\naddress = \"192.0.2.3{}/24\"\ninterface = \"{interface}\"\nmac = \"01:00:5e:00:02:1{}\"\nhash = \"{hash}\"\n{extra}",
            name.len() % 10,
            interface.len() % 10,
        )
    };
    let ls0 = share("ls0", "eth0", "src-dst", "");
    let unknown = format!(
        "{BASE}{ls0}{}",
        share("ls11", "eth01", "src-dst", "buckets_of = \"lsX\"\n")
    );
    assert_error(
        &unknown,
        "flowshare[1].buckets_of",
        "no flow share named \"lsX\"",
        "lsX",
    );
    let other_hash = format!(
        "{BASE}{ls0}{}",
        share("ls11", "eth01", "5tuple", "buckets_of = \"ls0\"\n")
    );
    assert_error(
        &other_hash,
        "flowshare[1].buckets_of",
        "must use the same",
        "buckets_of",
    );
    let not_symmetric = format!(
        "{BASE}{}{}",
        share("ls0", "eth0", "src", ""),
        share("ls11", "eth01", "src", "buckets_of = \"ls0\"\n")
    );
    assert_error(
        &not_symmetric,
        "flowshare[1].buckets_of",
        "not symmetric",
        "buckets_of",
    );
    let fine = format!(
        "{BASE}{ls0}{}",
        share("ls11", "eth01", "src-dst", "buckets_of = \"ls0\"\n")
    );
    Config::parse(Path::new("test.toml"), &fine).unwrap();
}

#[test]
fn the_node_comes_from_the_flag_and_must_be_a_server() {
    let config = Config::parse(Path::new("test.toml"), BASE).unwrap();
    assert_eq!(
        config.resolve_node(Some("fws2")).unwrap(),
        (1, "fws2".to_owned())
    );
    let error = config.resolve_node(Some("fws9")).unwrap_err().to_string();
    assert!(
        error.contains("fws9") && error.contains("fws1, fws2"),
        "{error}"
    );
}

#[test]
fn addresses_are_checked_against_the_node_interfaces() {
    use std::collections::BTreeMap;
    let config = Config::parse(Path::new("test.toml"), BASE).unwrap();
    let mut interfaces = BTreeMap::new();
    interfaces.insert("eth0".to_owned(), vec!["192.0.2.1/24".parse().unwrap()]);
    interfaces.insert("eth3".to_owned(), vec!["169.254.12.1/24".parse().unwrap()]);
    assert!(cluster_ctl::config::check_against_interfaces(&config, 0, &interfaces).is_empty());
    interfaces.insert("eth0".to_owned(), vec!["198.51.100.1/24".parse().unwrap()]);
    let problems = cluster_ctl::config::check_against_interfaces(&config, 0, &interfaces);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("outside every subnet of eth0")),
        "{problems:?}"
    );
    let problems = cluster_ctl::config::check_against_interfaces(&config, 1, &interfaces);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("169.254.12.2/24 is not configured")),
        "{problems:?}"
    );
}

/// BASE with group0's FIP hiding `hide` and a second group whose FIP hides `other`.
fn with_hides(hide: &str, other: &str) -> String {
    BASE.replace(
        "  interface = \"eth0\"\n\n  [[group.parp]]",
        &format!("  interface = \"eth0\"\n  hide = [{hide}]\n\n  [[group.parp]]"),
    ) + &format!(
        "\n[[group]]\nname = \"group1\"\npolicy = [\"fws2\", \"fws1\"]\n\n  [[group.fip]]\n  address = \"192.0.2.11/24\"\n  interface = \"eth0\"\n  hide = [{other}] # group1's\n"
    )
}

#[test]
fn hide_nat_sources_are_validated() {
    let good = with_hides("\"203.0.113.0/25\"", "\"203.0.113.128/25\"");
    let config = Config::parse(Path::new("test.toml"), &good).unwrap();
    assert_eq!(
        config.group[0].fip[0].hide,
        ["203.0.113.0/25".parse().unwrap()]
    );
    // One source behind two groups' addresses.
    assert_error(
        &with_hides("\"203.0.113.0/24\"", "\"203.0.113.128/25\""),
        "group[1].fip[0].hide[0]",
        "overlaps 203.0.113.0/24 (group[0].fip[0].hide[0]) of group group0",
        "# group1's",
    );
    // A source that holds the address it hides behind.
    assert_error(
        &with_hides("\"192.0.2.0/24\"", "\"203.0.113.128/25\""),
        "group[0].fip[0].hide[0]",
        "holds 192.0.2.10 itself",
        "hide = [\"192.0.2.0/24\"]",
    );
    // Hide NAT needs the interface the traffic leaves by.
    let no_interface = BASE.replace(
        "  address = \"192.0.2.10/24\"\n  interface = \"eth0\"",
        "  address = \"192.0.2.10/24\"\n  hide = [\"203.0.113.0/24\"] # here",
    );
    assert_error(
        &no_interface,
        "group[0].fip[0].hide",
        "needs `interface`",
        "# here",
    );
}

#[test]
fn static_nat_hosts_are_validated() {
    let nat = |inner: &str| {
        BASE.replace(
            "  address = \"192.0.2.20\"\n  interface = \"eth0\"",
            &format!("  address = \"192.0.2.20\"\n  interface = \"eth0\"\n  static_nat = \"{inner}\" # inner"),
        )
    };
    let config = Config::parse(Path::new("test.toml"), &nat("198.51.100.100")).unwrap();
    assert_eq!(
        config.group[0].parp[0].static_nat,
        Some("198.51.100.100".parse().unwrap())
    );
    assert_error(
        &nat("192.0.2.20"),
        "group[0].parp[0].static_nat",
        "is the proxy-ARP address itself",
        "# inner",
    );
    assert_error(
        &nat("192.0.2.10"),
        "group[0].parp[0].static_nat",
        "is a cluster address (group[0].fip[0].address)",
        "# inner",
    );
    let twice = nat("198.51.100.100")
        + "\n  [[group.parp]]\n  address = \"192.0.2.21\"\n  interface = \"eth0\"\n  static_nat = \"198.51.100.100\" # twice\n";
    assert_error(
        &twice,
        "group[0].parp[1].static_nat",
        "already stands behind group[0].parp[0].static_nat",
        "# twice",
    );
    // On a node: the published address must be in its interface's subnet, the inner host in
    // the subnet of some interface.
    use std::collections::BTreeMap;
    let config = Config::parse(Path::new("test.toml"), &nat("198.51.100.100")).unwrap();
    let mut interfaces = BTreeMap::new();
    interfaces.insert("eth0".to_owned(), vec!["192.0.2.1/24".parse().unwrap()]);
    interfaces.insert("eth3".to_owned(), vec!["169.254.12.1/24".parse().unwrap()]);
    let problems = cluster_ctl::config::check_against_interfaces(&config, 0, &interfaces);
    assert!(
        problems
            .iter()
            .any(|p| p
                .contains("static_nat: 198.51.100.100 is outside the subnet of every interface")),
        "{problems:?}"
    );
    interfaces.insert("eth1".to_owned(), vec!["198.51.100.1/24".parse().unwrap()]);
    assert!(cluster_ctl::config::check_against_interfaces(&config, 0, &interfaces).is_empty());
    interfaces.insert("eth0".to_owned(), vec!["10.0.0.1/24".parse().unwrap()]);
    let problems = cluster_ctl::config::check_against_interfaces(&config, 0, &interfaces);
    assert!(
        problems
            .iter()
            .any(|p| p
                .contains("group[0].parp[0].address: 192.0.2.20 is outside every subnet of eth0")),
        "{problems:?}"
    );
}

#[test]
fn the_sync_interconnect_must_exist() {
    let config = Config::parse(
        Path::new("test.toml"),
        &format!("{BASE}\n[sync]\ninterconnect = 0\n"),
    )
    .unwrap();
    let sync = config.sync.expect("[sync] present");
    assert_eq!(
        (sync.interconnect, sync.port, sync.wait.as_secs()),
        (0, 3780, 30)
    );
    assert_error(
        &format!("{BASE}\n[sync]\ninterconnect = 1 # beyond\n"),
        "sync.interconnect",
        "interconnect 1 does not exist (each server has 1",
        "# beyond",
    );
}

/// BASE with IPv6 addresses beside the IPv4 ones: `fip` and `parp` are the extra blocks' bodies.
fn with_ipv6(fip: &str, parp: &str) -> String {
    BASE.replace(
        "  [[group.parp]]",
        &format!("  [[group.fip]]\n{fip}\n\n  [[group.parp]]\n{parp}\n\n  [[group.parp]]"),
    )
}

#[test]
fn ipv6_floating_and_proxy_addresses_are_accepted_with_their_router_flags() {
    let source = with_ipv6(
        "  address = \"2001:db8::10/64\"\n  interface = \"eth0\"",
        "  address = \"2001:db8::20\"\n  interface = \"eth0\"\n  router = true",
    );
    let config = Config::parse(Path::new("test.toml"), &source).unwrap();
    let group = &config.group[0];
    assert_eq!(group.fip[1].address, "2001:db8::10/64".parse().unwrap());
    assert!(
        group.fip[0].router && group.fip[1].router,
        "a gateway by default"
    );
    assert_eq!(
        group.parp[0].address,
        "2001:db8::20".parse::<std::net::IpAddr>().unwrap()
    );
    assert!(group.parp[0].router);
    assert!(
        !group.parp[1].router,
        "a proxied host is no router by default"
    );
    // The defaults are not written back out.
    let written = toml::to_string(&config).unwrap();
    assert_eq!(written.matches("router = true").count(), 1, "{written}");

    let mut interfaces = std::collections::BTreeMap::new();
    interfaces.insert(
        "eth0".to_owned(),
        vec![
            "192.0.2.1/24".parse().unwrap(),
            "2001:db8::1/64".parse().unwrap(),
        ],
    );
    interfaces.insert("eth3".to_owned(), vec!["169.254.12.1/24".parse().unwrap()]);
    assert_eq!(
        cluster_ctl::config::check_against_interfaces(&config, 0, &interfaces),
        Vec::<String>::new()
    );
    interfaces.insert("eth0".to_owned(), vec!["192.0.2.1/24".parse().unwrap()]);
    let problems = cluster_ctl::config::check_against_interfaces(&config, 0, &interfaces);
    assert!(
        problems.iter().any(|p| p.contains("group[0].parp[0].address: 2001:db8::20 is outside every subnet of eth0: no Neighbor Solicitation")),
        "{problems:?}"
    );
}

#[test]
fn ipv6_addresses_unfit_for_a_cluster_and_ipv4_only_nat_are_refused() {
    let fip = |body: &str| with_ipv6(body, "  address = \"2001:db8::20\"\n  interface = \"eth0\"");
    assert_error(
        &fip("  address = \"2001:db8::10/128\"\n  interface = \"eth0\""),
        "group[0].fip[1].address",
        "needs the prefix of its subnet (e.g. /64)",
        "2001:db8::10/128",
    );
    assert_error(
        &fip("  address = \"ff02::10/64\"\n  interface = \"eth0\""),
        "group[0].fip[1].address",
        "ff02::10 is a multicast address",
        "ff02::10/64",
    );
    assert_error(
        &fip("  address = \"::ffff:192.0.2.99/120\"\n  interface = \"eth0\""),
        "group[0].fip[1].address",
        "is IPv4-mapped",
        "::ffff:192.0.2.99/120",
    );
    assert_error(
        &fip("  address = \"fe80::10/64\""),
        "group[0].fip[1].address",
        "fe80::10 is link-local: every interface holds fe80::/64, so name the interface",
        "fe80::10/64",
    );
    assert_error(
        &fip(
            "  address = \"2001:db8::10/64\"\n  interface = \"eth0\"\n  hide = [\"203.0.113.0/24\"]",
        ),
        "group[0].fip[1].hide",
        "hide NAT translates IPv4 sources and 2001:db8::10 is IPv6",
        "hide = [\"203.0.113.0/24\"]",
    );
    assert_error(
        &with_ipv6(
            "  address = \"2001:db8::10/64\"\n  interface = \"eth0\"",
            "  address = \"2001:db8::20\"\n  interface = \"eth0\"\n  static_nat = \"203.0.113.5\"",
        ),
        "group[0].parp[0].static_nat",
        "static NAT maps IPv4 addresses and 2001:db8::20 is IPv6",
        "static_nat = \"203.0.113.5\"",
    );
    // One address in two places, IPv6 as IPv4.
    assert_error(
        &with_ipv6(
            "  address = \"2001:db8::20/64\"\n  interface = \"eth0\"",
            "  address = \"2001:db8::20\"\n  interface = \"eth0\"",
        ),
        "group[0].parp[0].address",
        "address 2001:db8::20 is also used by group[0].fip[1].address",
        "  address = \"2001:db8::20\"",
    );
}

#[test]
fn ipv6_interconnects_are_accepted_and_need_global_or_unique_local_addresses() {
    let source = BASE
        .replace("169.254.12.1/24", "fd00:12::1/64")
        .replace("169.254.12.2/24", "fd00:12::2/64");
    let config = Config::parse(Path::new("test.toml"), &source).unwrap();
    assert_eq!(
        config.server[1].interconnect[0],
        "fd00:12::2/64".parse().unwrap()
    );
    let link_local = BASE
        .replace("169.254.12.1/24", "fe80::1/64")
        .replace("169.254.12.2/24", "fe80::2/64");
    assert_error(
        &link_local,
        "server[0].interconnect[0]",
        "fe80::1 is not a global or unique-local unicast address",
        "fe80::1/64",
    );
    // Both ends of one interconnect in one subnet, whatever the family.
    let mixed = BASE.replace("169.254.12.2/24", "fd00:12::2/64");
    assert_error(
        &mixed,
        "server[1].interconnect[0]",
        "fd00:12::2/64 is not in the subnet 169.254.12.0/24 of fws1's interconnect 0",
        "fd00:12::2/64",
    );
}

#[test]
fn echo_targets_must_be_reachable_host_addresses() {
    let with_ipw = |targets: &str| {
        BASE.replace(
            "  [[group.parp]]",
            &format!("  [[group.ipw]]\n  targets = [{targets}]\n\n  [[group.parp]]"),
        )
    };
    let good = with_ipw("\"192.0.2.254\", \"2001:db8::fe\"");
    let config = Config::parse(Path::new("test.toml"), &good).unwrap();
    assert_eq!(
        config.group[0].ipw[0].targets[1],
        "2001:db8::fe".parse::<std::net::IpAddr>().unwrap()
    );
    assert_error(
        &with_ipw("\"192.0.2.254\", \"fe80::1\""),
        "group[0].ipw[0].targets[1]",
        "fe80::1 is link-local and names no interface",
        "fe80::1",
    );
    assert_error(
        &with_ipw("\"ff02::1\""),
        "group[0].ipw[0].targets[0]",
        "ff02::1 is a multicast address",
        "ff02::1",
    );
    let tiebreaker = BASE.replace(
        "wait_timeout = \"10s\"",
        "wait_timeout = \"10s\"\ntiebreakers = [\"0.0.0.0\"]",
    );
    assert_error(
        &tiebreaker,
        "cluster.tiebreakers[0]",
        "0.0.0.0 is not the address of a host",
        "tiebreakers",
    );
    let probed = BASE.replace(
        "  [[group.parp]]",
        "  [[group.fip]]\n  address = \"fe80::10/64\"\n  interface = \"eth0\"\n  ping_count = 1\n\n  [[group.parp]]",
    );
    assert_error(
        &probed,
        "group[0].fip[1].ping_count",
        "cannot be probed without an interface scope",
        "ping_count = 1",
    );
}
