//! What a worker does once before its loop runs: real-time scheduling, the ARP guard, the XDP
//! attachments, and the address table with the lease slots carried over from the last start.

use std::{collections::BTreeSet, path::Path};

use anyhow::{Context as _, Result, bail};
use cluster_common::{AddressEntry, AddressKey, AddressKey6, AddressKind, Lease};

use crate::{
    catalog,
    config::{Config, XdpModeConfig},
    dataplane::{self, Dataplane, ModePreference},
};

/// Real-time scheduling (inherited by every thread started later) and locked memory, so that
/// heartbeats and lease renewals keep their schedule on a busy firewall. Without the privilege
/// the daemon runs on, saying so.
pub(super) fn realtime(priority: u8) {
    if priority == 0 {
        return;
    }
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: plain system calls on this process.
    let (scheduled, locked) = unsafe {
        (
            libc::sched_setscheduler(0, libc::SCHED_FIFO, &param),
            libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE),
        )
    };
    if scheduled != 0 || locked != 0 {
        tracing::warn!(
            id = catalog::DAEMON_STARTED.id,
            priority,
            error = %std::io::Error::last_os_error(),
            "real-time scheduling or memory locking unavailable; running without"
        );
    }
}

fn xdp_preference(mode: XdpModeConfig) -> ModePreference {
    match mode {
        XdpModeConfig::Auto => ModePreference::Auto,
        XdpModeConfig::Native => ModePreference::Native,
        XdpModeConfig::Generic => ModePreference::Generic,
    }
}

/// Attaches the program to every interface that carries a cluster address of this node.
pub(super) fn attach_interfaces(
    config: &Config,
    me: usize,
    dataplane: &mut Dataplane,
) -> Result<()> {
    let mut interfaces = BTreeSet::new();
    for group in &config.group {
        for fip in &group.fip {
            if let Some(i) = &fip.interface {
                interfaces.insert(i.clone());
            }
        }
        for parp in &group.parp {
            interfaces.insert(parp.interface.clone());
        }
    }
    for share in &config.flowshare {
        interfaces.insert(share.interface.clone());
    }
    let local = crate::netif::interface_addresses()?;
    let problems = crate::config::check_against_interfaces(config, me, &local);
    if !problems.is_empty() {
        bail!(
            "the configuration does not fit this node's interfaces:\n  {}",
            problems.join("\n  ")
        );
    }
    // FIPs without an interface name are on the interface of their subnet.
    for group in &config.group {
        for fip in group.fip.iter().filter(|f| f.interface.is_none()) {
            if let Some(name) = crate::netif::subnet_interface(&local, fip.address.addr()) {
                interfaces.insert(name.to_owned());
            }
        }
    }
    let preference = xdp_preference(config.cluster.xdp_mode);
    for interface in interfaces {
        let attachment = dataplane
            .attach(&interface, preference)
            .with_context(|| format!("attaching XDP to {interface}"))?;
        tracing::info!(
            id = catalog::XDP_ATTACHED.id,
            interface,
            mode = attachment.mode.as_str(),
            adopted = attachment.adopted,
            "XDP attached"
        );
    }
    Ok(())
}

/// Installs the ARP guard for every cluster address of the configuration and has the kernel
/// announce from primary addresses on their interfaces, and the IPv6 guard for the IPv6 ones
/// (see [`crate::arp_guard`]); the kernel keeps the IPv6 addresses of their interfaces when a
/// link goes down.
pub(super) fn guard_cluster_addresses(config: &Config) -> Result<()> {
    // Every cluster address with its interface.
    let mut cluster_addresses: Vec<(std::net::IpAddr, String)> = Vec::new();
    for (g, group) in config.group.iter().enumerate() {
        for (f, fip) in group.fip.iter().enumerate() {
            cluster_addresses.push((
                fip.address.addr(),
                crate::netif::fip_interface(config, g, f)?,
            ));
        }
        for parp in &group.parp {
            cluster_addresses.push((parp.address, parp.interface.clone()));
        }
    }
    for share in &config.flowshare {
        cluster_addresses.push((share.address.addr(), share.interface.clone()));
    }
    let local = crate::netif::interface_addresses()?;
    let mut addresses = BTreeSet::new();
    let mut interfaces = BTreeSet::new();
    let mut addresses6 = BTreeSet::new();
    for (address, interface) in cluster_addresses {
        match address {
            std::net::IpAddr::V4(address) => {
                addresses.insert(address);
                interfaces.insert(interface);
            }
            std::net::IpAddr::V6(address) => {
                crate::netif::keep_ipv6_addresses_on_down(&interface)?;
                let link_local = local.get(&interface).and_then(|nets| {
                    nets.iter().find_map(|n| match n.addr() {
                        std::net::IpAddr::V6(a) if a.is_unicast_link_local() => Some(a),
                        _ => None,
                    })
                });
                match link_local {
                    Some(link_local) => {
                        addresses6.insert(crate::arp_guard::GuardedIpv6 {
                            interface,
                            address,
                            link_local,
                        });
                    }
                    None => tracing::warn!(
                        id = catalog::ARP_GUARD.id,
                        interface,
                        %address,
                        "{interface} has no link-local address: the kernel's neighbor \
                         solicitations may name {address} as their source"
                    ),
                }
            }
        }
    }
    crate::arp_guard::install(&config.cluster.name, &addresses, &addresses6)?;
    for interface in &interfaces {
        crate::arp_guard::announce_from_primary(interface)?;
    }
    warn_about_proxy_arp(&interfaces);
    tracing::info!(
        id = catalog::ARP_GUARD.id,
        table = crate::arp_guard::table_name(&config.cluster.name),
        addresses = addresses.len(),
        ipv6_addresses = addresses6.len(),
        interfaces = interfaces.len(),
        "ARP guard installed"
    );
    Ok(())
}

/// Kernel proxy ARP on a cluster interface answers for routed addresses, cluster addresses among
/// them, on every node alike (the seed turns FireWall-1's automatic ARP off for the same reason).
/// The ARP guard keeps the kernel from answering for the cluster's own addresses, but a static
/// NAT host or a route learnt later would still be answered twice: the operator is told.
fn warn_about_proxy_arp(interfaces: &BTreeSet<String>) {
    for interface in std::iter::once("all").chain(interfaces.iter().map(String::as_str)) {
        let path = format!("/proc/sys/net/ipv4/conf/{interface}/proxy_arp");
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() != "0") {
            tracing::warn!(
                id = catalog::PROXY_ARP_ON.id,
                interface,
                "kernel proxy ARP is on ({path}): the kernel may answer ARP for addresses of \
                 {interface} on every node; set it to 0 and leave proxy ARP to fwcluster"
            );
        }
    }
}

/// Writes the address table, with the pinned leases kept by group name: leases by slot are
/// matched to groups through `<state_dir>/<cluster>.<node>.slots`, so that a configuration
/// that reordered the groups does not have a restarted daemon adopt one group's lease for
/// another.
pub(super) fn restore_slots(
    config: &Config,
    node: &str,
    state_dir: &Path,
    dataplane: &mut Dataplane,
) -> Result<()> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating the state directory {}", state_dir.display()))?;
    let slots = state_dir.join(format!("{}.{node}.slots", config.cluster.name));
    let moved = take_moved_leases(config, dataplane, &slots)?;
    configure_addresses(config, dataplane)?;
    put_moved_leases(config, dataplane, moved)?;
    let labels: String = slot_labels(config)
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    crate::incarnation::write_atomically(&slots, &labels)?;
    Ok(())
}

/// Writes every FIP, PARP and shared address into the data path (ownership comes later,
/// by lease): IPv4 addresses into the ARP table, IPv6 ones into the Neighbor Discovery table.
fn configure_addresses(config: &Config, dataplane: &mut Dataplane) -> Result<()> {
    let mut entries = Vec::new();
    let mut entries6 = Vec::new();
    let mut hit_slot = 0u32;
    let mut add = |ifindex: u32, address: std::net::IpAddr, entry: AddressEntry| match address {
        std::net::IpAddr::V4(address) => entries.push((
            AddressKey {
                ifindex,
                addr: u32::from_ne_bytes(address.octets()),
            },
            entry,
        )),
        std::net::IpAddr::V6(address) => {
            entries6.push((AddressKey6::new(ifindex, address.octets()), entry))
        }
    };
    for (g, group) in config.group.iter().enumerate() {
        for (f, fip) in group.fip.iter().enumerate() {
            let interface = crate::netif::fip_interface(config, g, f)?;
            let mac = crate::netif::interface_mac(&interface)?;
            add(
                dataplane::ifindex(&interface)?,
                fip.address.addr(),
                AddressEntry::new(g as u32, hit_slot, AddressKind::Fip, mac, mac)
                    .router(fip.router),
            );
            hit_slot += 1;
        }
        for parp in &group.parp {
            let mac = match parp.mac {
                Some(mac) => mac.0,
                None => crate::netif::interface_mac(&parp.interface)?,
            };
            add(
                dataplane::ifindex(&parp.interface)?,
                parp.address,
                AddressEntry::new(g as u32, hit_slot, AddressKind::Parp, mac, mac)
                    .router(parp.router),
            );
            hit_slot += 1;
        }
    }
    let shared = crate::flowshare::address_entries(config)?;
    entries.extend(shared.v4);
    entries6.extend(shared.v6);
    // One replacement: addresses a restarted controller's configuration no longer has go too.
    dataplane.replace_addresses(entries, entries6)?;
    Ok(())
}

/// What each lease slot is for: `g NAME` for the groups, then `f NAME` for the flow-share
/// instances (whose slots follow the groups').
fn slot_labels(config: &Config) -> Vec<String> {
    config
        .group
        .iter()
        .map(|g| format!("g {}", g.name))
        .chain(config.flowshare.iter().map(|f| format!("f {}", f.name)))
        .collect()
}

/// Leases of groups whose slot changed since the last start (recorded in `slots`, one label
/// per slot, see [`slot_labels`]), taken out of their old slots: every slot whose label changed
/// is released before the address table maps the slots anew, so that no address is ever
/// answered under another group's lease. Flow-share leases are taken anew at start anyway.
fn take_moved_leases(
    config: &Config,
    dataplane: &mut Dataplane,
    slots: &Path,
) -> Result<Vec<(String, Lease)>> {
    let previous: Vec<String> = match std::fs::read_to_string(slots) {
        Ok(text) => text.lines().map(str::to_owned).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", slots.display())),
    };
    let labels = slot_labels(config);
    let mut moved = Vec::new();
    for (slot, label) in previous.iter().enumerate() {
        if labels.get(slot) == Some(label) {
            continue;
        }
        if let Some(lease) = dataplane.lease(slot as u32)? {
            if lease.owned != 0
                && let Some(group) = label.strip_prefix("g ")
            {
                moved.push((group.to_owned(), lease));
            }
            dataplane.release(slot as u32, lease.epoch)?;
        }
    }
    Ok(moved)
}

/// Puts the leases [`take_moved_leases`] took into the new slots of their groups (under an
/// epoch above both slots' ones); leases of groups no longer configured stay released.
fn put_moved_leases(
    config: &Config,
    dataplane: &mut Dataplane,
    moved: Vec<(String, Lease)>,
) -> Result<()> {
    for (name, lease) in moved {
        let Some(slot) = config.group.iter().position(|g| g.name == name) else {
            tracing::warn!(
                group = name,
                "lease of a group no longer configured released"
            );
            continue;
        };
        let current = dataplane.lease(slot as u32)?.map_or(0, |l| l.epoch);
        let epoch = lease.epoch.max(current) + 1;
        dataplane.acquire_until(slot as u32, epoch, lease.expires_ns)?;
        tracing::warn!(
            id = catalog::ADOPTED.id,
            group = name,
            slot,
            epoch,
            "the group's pinned lease moved to its new slot (the configuration reordered the groups)"
        );
    }
    Ok(())
}
