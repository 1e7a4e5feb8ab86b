//! The kernel never answers ARP for a cluster address (R-XDP-7, defence in depth).
//!
//! The XDP program answers ARP for the addresses this node owns and drops requests for the
//! ones it does not, so the kernel never sees either. That holds only while the program is
//! attached: detached by hand, lost with a private bpffs, or not yet attached at start, the
//! kernel would answer for a floating address still configured on the interface (or, through
//! Linux's "ARP flux", on any interface), beside the node that owns it now.
//!
//! Two measures close that, both kernel state that outlives the daemon:
//! - An nftables table of the `arp` family, owned by the daemon, drops ARP requests for every
//!   cluster address (floating, proxy-ARP and shared) at the input hook, which comes after XDP
//!   and before the kernel's ARP code; and ARP the kernel itself would send from a cluster
//!   address at the output hook. The daemon's own gratuitous ARPs go out on packet sockets,
//!   which netfilter's ARP hooks do not see. A sysctl cannot do this: `arp_ignore` only looks
//!   at which interface holds an address, not at which addresses are the cluster's.
//! - `arp_announce = 2` on the interfaces with cluster addresses: the kernel picks the
//!   interface's primary (real) address as the sender of its own ARP requests, never a
//!   floating address that may belong to the peer now, so the output rule never blocks the
//!   node's own neighbour resolution.
//!
//! IPv6 has no `arp_announce`: the kernel names the source of the packet it resolves for (a
//! reply from a floating or shared address, say) as the source of its Neighbor Solicitation,
//! whose source link-layer option then binds that cluster address to this node's own MAC in
//! the neighbour's cache — for a shared address, every flow to this one node. A second table
//! (`ip6`) rewrites the source of such solicitations to the interface's link-local address
//! (any address of the interface is a valid source, RFC 4861 7.2.2; the answer comes back all
//! the same), which the table's rule names per interface.
//!
//! The tables are replaced atomically at every start and removed by `clpcfg uninstall`.

use std::{
    collections::BTreeSet,
    io::{self, Write as _},
    net::{Ipv4Addr, Ipv6Addr},
    process::{Command, Stdio},
};

/// Why the guard could not be installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("running nft (install nftables: the ARP guard needs it): {0}")]
    Nft(io::Error),
    #[error("nft refused the ARP guard: {0}")]
    Refused(String),
    #[error("writing {path}: {source}")]
    Sysctl { path: String, source: io::Error },
}

type Result<T> = std::result::Result<T, GuardError>;

/// The nftables table of a cluster (one daemon per network namespace and cluster).
pub fn table_name(cluster: &str) -> String {
    let clean: String = cluster
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("fwcluster_guard_{clean}")
}

/// The nft script that (re)creates the guard table for `addresses`, in one transaction.
pub fn script(cluster: &str, addresses: &BTreeSet<Ipv4Addr>) -> String {
    let table = table_name(cluster);
    let elements = if addresses.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = addresses.iter().map(Ipv4Addr::to_string).collect();
        format!(" elements = {{ {} }};", list.join(", "))
    };
    format!(
        "table arp {table}\n\
         delete table arp {table}\n\
         table arp {table} {{\n\
         \tcomment \"fwcluster: only the XDP program answers ARP for cluster addresses\"\n\
         \tset cluster_addresses {{ type ipv4_addr;{elements} }}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tarp operation request arp daddr ip @cluster_addresses counter drop\n\
         \t}}\n\
         \tchain output {{\n\
         \t\ttype filter hook output priority filter; policy accept;\n\
         \t\tarp saddr ip @cluster_addresses counter drop\n\
         \t}}\n\
         }}\n"
    )
}

fn nft(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(GuardError::Nft)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(GuardError::Nft)?;
    }
    let output = child.wait_with_output().map_err(GuardError::Nft)?;
    if !output.status.success() {
        return Err(GuardError::Refused(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}

/// One IPv6 cluster address on its interface, with the interface's link-local address (the
/// source its solicitations get instead).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GuardedIpv6 {
    pub interface: String,
    pub address: Ipv6Addr,
    pub link_local: Ipv6Addr,
}

/// The nft script that (re)creates the IPv6 guard table, in one transaction.
pub fn script6(cluster: &str, addresses: &BTreeSet<GuardedIpv6>) -> String {
    let table = table_name(cluster);
    let mut rules = String::new();
    for guarded in addresses {
        rules.push_str(&format!(
            "\t\toifname \"{}\" icmpv6 type nd-neighbor-solicit ip6 saddr {} ip6 saddr set {} counter\n",
            guarded.interface, guarded.address, guarded.link_local
        ));
    }
    format!(
        "table ip6 {table}\n\
         delete table ip6 {table}\n\
         table ip6 {table} {{\n\
         \tcomment \"fwcluster: the kernel's neighbor solicitations never name a cluster address as their source\"\n\
         \tchain output {{\n\
         \t\ttype filter hook output priority filter; policy accept;\n\
         {rules}\
         \t}}\n\
         }}\n"
    )
}

/// Installs (or replaces) the guard tables of `cluster` for `addresses` and `addresses6`.
pub fn install(
    cluster: &str,
    addresses: &BTreeSet<Ipv4Addr>,
    addresses6: &BTreeSet<GuardedIpv6>,
) -> Result<()> {
    nft(&format!(
        "{}{}",
        script(cluster, addresses),
        script6(cluster, addresses6)
    ))
}

/// Removes the guard tables of `cluster`, if there are any.
pub fn remove(cluster: &str) -> Result<()> {
    let table = table_name(cluster);
    nft(&format!(
        "table arp {table}\ndelete table arp {table}\ntable ip6 {table}\ndelete table ip6 {table}\n"
    ))
}

/// Makes the kernel use the interface's primary address as the sender of its own ARP.
pub fn announce_from_primary(interface: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv4/conf/{interface}/arp_announce");
    std::fs::write(&path, "2").map_err(|source| GuardError::Sysctl { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_replaces_the_table_atomically_and_lists_every_address() {
        let addresses: BTreeSet<Ipv4Addr> =
            ["192.168.1.3".parse().unwrap(), "10.0.0.9".parse().unwrap()].into();
        let script = script("lab-1", &addresses);
        let table = "fwcluster_guard_lab_1";
        assert!(script.starts_with(&format!(
            "table arp {table}\ndelete table arp {table}\ntable arp {table} {{"
        )));
        assert!(script.contains("elements = { 10.0.0.9, 192.168.1.3 };"));
        assert!(script.contains("arp operation request arp daddr ip @cluster_addresses"));
        assert!(script.contains("arp saddr ip @cluster_addresses counter drop"));
        // No addresses: an empty set, still a valid table.
        assert!(super::script("c", &BTreeSet::new()).contains("type ipv4_addr; }"));
    }

    #[test]
    fn the_ipv6_script_rewrites_solicitations_from_each_cluster_address_on_its_interface() {
        let guarded: BTreeSet<GuardedIpv6> = [GuardedIpv6 {
            interface: "eth0".into(),
            address: "2001:db8::30".parse().unwrap(),
            link_local: "fe80::1".parse().unwrap(),
        }]
        .into();
        let script = script6("lab-1", &guarded);
        assert!(script.starts_with(
            "table ip6 fwcluster_guard_lab_1\ndelete table ip6 fwcluster_guard_lab_1\n"
        ));
        assert!(script.contains(
            "oifname \"eth0\" icmpv6 type nd-neighbor-solicit ip6 saddr 2001:db8::30 ip6 saddr set fe80::1 counter\n"
        ));
        // Checked by nft itself, without loading.
        let check = Command::new("nft")
            .args(["-c", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child.stdin.take().expect("stdin").write_all(
                    format!("{}{}", super::script("lab-1", &BTreeSet::new()), script).as_bytes(),
                )?;
                child.wait_with_output()
            });
        let output = check.expect("nft runs (cargo xtask setup installs it)");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
