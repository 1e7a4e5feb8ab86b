//! Flow load share (R-MODE-3): a shared address answered by every live node with one multicast
//! MAC; the XDP program passes the buckets this node owns. Membership changes move buckets by a
//! map update alone (no gratuitous ARP, no MAC change).
//!
//! Every node deals the buckets over the same sorted list of live nodes, so all nodes agree
//! as soon as they agree on membership. The flow-share lease (one slot per instance, after the
//! groups) is renewed every tick like a group's, so a dead controller's node stops passing
//! traffic before the survivors take its buckets.

use std::time::Duration;

use anyhow::{Context as _, Result};
use cluster_common::{
    AddressEntry, AddressKey, AddressKey6, AddressKind, FlowShare, HashMode, NO_OWNER,
};
use sha2::{Digest as _, Sha256};

use crate::{
    config::{Config, HashModeConfig},
    dataplane::{self, Dataplane},
    netif,
};

struct Instance {
    name: String,
    slot: u32,
    /// The bucket table: this instance's own, or the one it deals its flows with
    /// (`buckets_of`), which that instance deals.
    table: u32,
    deals: bool,
    buckets: u32,
    interface: String,
    address: ipnet::IpNet,
    mac: [u8; 6],
    epoch: u64,
    owners: Vec<u32>,
}

/// The flow-share instances of this node.
pub struct FlowShares {
    instances: Vec<Instance>,
    lease: Duration,
}

/// The hash seed: the same on every node, different per cluster and instance.
fn seed(cluster: &str, name: &str) -> u32 {
    let digest = Sha256::digest(format!("{cluster}/{name}").as_bytes());
    u32::from_be_bytes(digest[..4].try_into().expect("4 bytes"))
}

/// Buckets dealt round-robin over the sorted live nodes.
pub fn deal(buckets: u32, live: &[u32]) -> Vec<u32> {
    (0..buckets as usize)
        .map(|b| {
            if live.is_empty() {
                NO_OWNER
            } else {
                live[b % live.len()]
            }
        })
        .collect()
}

const SIOCADDMULTI: libc::c_ulong = 0x8931;
const SIOCDELMULTI: libc::c_ulong = 0x8932;

/// Joins (or leaves) a link-layer multicast group, so the NIC delivers the shared MAC.
fn multicast(interface: &str, mac: [u8; 6], join: bool) -> Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: zero is valid for ifreq.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(interface.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: writing the hwaddr member of the union.
    unsafe {
        request.ifr_ifru.ifru_hwaddr.sa_family = libc::AF_UNSPEC as u16;
        for (dst, src) in request.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
            *dst = src as libc::c_char;
        }
    }
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let op = if join { SIOCADDMULTI } else { SIOCDELMULTI };
    // SAFETY: valid ifreq for SIOC{ADD,DEL}MULTI.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), op, &mut request) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("multicast membership of {interface}"));
    }
    Ok(())
}

/// The lease slot of flow-share instance `k`: after the groups' slots.
fn lease_slot(config: &Config, k: usize) -> u32 {
    (config.group.len() + k) as u32
}

/// The data path's entries for the shared addresses, answered with the shared MAC by every
/// node whose flow-share lease is live: IPv4 ones in ARP, IPv6 ones in Neighbor Discovery.
pub fn address_entries(config: &Config) -> Result<SharedEntries> {
    let mut entries = SharedEntries::default();
    for (k, share) in config.flowshare.iter().enumerate() {
        let ifindex = dataplane::ifindex(&share.interface)?;
        let entry = AddressEntry::new(
            lease_slot(config, k),
            crate::config::MAX_TOTAL_ADDRESSES as u32 + k as u32,
            AddressKind::Shared,
            share.mac.0,
            // The multicast MAC may not be a frame's source (bridges drop those).
            netif::interface_mac(&share.interface)?,
        );
        match share.address.addr() {
            std::net::IpAddr::V4(address) => entries.v4.push((
                AddressKey {
                    ifindex,
                    addr: u32::from_ne_bytes(address.octets()),
                },
                entry,
            )),
            std::net::IpAddr::V6(address) => entries
                .v6
                .push((AddressKey6::new(ifindex, address.octets()), entry)),
        }
    }
    Ok(entries)
}

/// The shared addresses' entries, by family.
#[derive(Default)]
pub struct SharedEntries {
    pub v4: Vec<(AddressKey, AddressEntry)>,
    pub v6: Vec<(AddressKey6, AddressEntry)>,
}

impl FlowShares {
    /// Configures every instance in the data path, adds the shared addresses to their
    /// interfaces and takes the flow-share leases.
    pub fn start(config: &Config, dataplane: &mut Dataplane, lease: Duration) -> Result<Self> {
        let mut instances = Vec::new();
        for (k, share) in config.flowshare.iter().enumerate() {
            let slot = lease_slot(config, k);
            // An instance dealing its flows with another's buckets uses that one's table and
            // seed (validated: same hash mode and bucket count).
            let (table, seed_name) = match &share.buckets_of {
                Some(leader) => (
                    config
                        .flowshare
                        .iter()
                        .position(|f| &f.name == leader)
                        .with_context(|| format!("flow share {leader:?}"))?,
                    leader.as_str(),
                ),
                None => (k, share.name.as_str()),
            };
            let ifindex = dataplane::ifindex(&share.interface)?;
            let local_mac = netif::interface_mac(&share.interface)?;
            let hash_mode = match share.hash {
                HashModeConfig::Src => HashMode::Src,
                HashModeConfig::SrcDst => HashMode::SrcDst,
                HashModeConfig::FiveTuple => HashMode::FiveTuple,
            };
            dataplane.set_flowshare(&FlowShare {
                ifindex,
                lease: slot,
                table: table as u32,
                buckets: share.buckets,
                seed: seed(&config.cluster.name, seed_name),
                mac: share.mac.0,
                local_mac,
                hash_mode: hash_mode as u8,
                _pad: [0; 3],
                node_id: 0, // filled in by Dataplane::set_flowshare
            })?;
            netif::add_address(
                &share.interface,
                share.address,
                &format!("{}:fs{k}", share.interface),
            )?;
            // ARP this node sends never names the shared address as its sender (clients would
            // bind it to this node's own MAC): the daemon's ARP guard has set arp_announce 2 on
            // the interface and drops such ARP at output (`crate::arp_guard`).
            multicast(&share.interface, share.mac.0, true)?;
            let epoch = dataplane.lease(slot)?.map_or(0, |l| l.epoch) + 1;
            dataplane.acquire(slot, epoch, lease)?;
            instances.push(Instance {
                name: share.name.clone(),
                slot,
                table: table as u32,
                deals: share.buckets_of.is_none(),
                buckets: share.buckets,
                interface: share.interface.clone(),
                address: share.address,
                mac: share.mac.0,
                epoch,
                owners: Vec::new(),
            });
        }
        Ok(Self { instances, lease })
    }

    /// Every tick: renew the leases. A lease that ran out while this process did not run
    /// (frozen, starved) cannot be renewed: the peers dealt the buckets without this node
    /// meanwhile. It is taken anew under a new epoch once `rejoined` (the peers count this
    /// node again); until then this node passes no flow-shared traffic.
    pub fn renew(&mut self, dataplane: &mut Dataplane, rejoined: bool) -> Result<()> {
        for instance in &mut self.instances {
            match dataplane.renew(instance.slot, instance.epoch, self.lease) {
                Ok(()) => {}
                Err(dataplane::DataplaneError::Expired { .. }) if rejoined => {
                    let epoch = dataplane.lease(instance.slot)?.map_or(0, |l| l.epoch) + 1;
                    dataplane.acquire(instance.slot, epoch, self.lease)?;
                    instance.epoch = epoch;
                    tracing::warn!(
                        id = crate::catalog::ADOPTED.id,
                        table = instance.table,
                        epoch,
                        "flow-share lease taken anew after this node stalled"
                    );
                }
                Err(dataplane::DataplaneError::Expired { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Before an in-place restart: the leases run `lease` from now, as long as the peers'
    /// restart hold keeps the buckets this node's (see `Engine::restart_shared_until`).
    pub fn hold(&mut self, dataplane: &mut Dataplane, lease: Duration) -> Result<()> {
        for instance in &self.instances {
            dataplane.renew(instance.slot, instance.epoch, lease)?;
        }
        Ok(())
    }

    /// Deals the buckets over `live` (sorted node ids) when membership changed.
    pub fn rebalance(&mut self, dataplane: &mut Dataplane, live: &[u32]) -> Result<()> {
        for instance in &mut self.instances {
            let owners = deal(instance.buckets, live);
            if owners != instance.owners {
                // A table shared by two instances is written once, by the one that deals it
                // (the same owners: both deal over the same live nodes).
                if instance.deals {
                    dataplane.set_buckets(instance.table, &owners)?;
                }
                tracing::info!(
                    table = instance.table,
                    live = ?live,
                    "flow-share buckets dealt"
                );
                instance.owners = owners;
            }
        }
        Ok(())
    }

    /// Buckets owned by `node`, per instance name.
    pub fn owned_by(&self, node: u32) -> std::collections::BTreeMap<String, usize> {
        self.instances
            .iter()
            .map(|i| {
                (
                    i.name.clone(),
                    i.owners.iter().filter(|o| **o == node).count(),
                )
            })
            .collect()
    }

    /// Gives everything up (clean stop): nothing passes here any more.
    pub fn stop(&mut self, dataplane: &mut Dataplane) {
        for instance in &self.instances {
            let _ = dataplane.release(instance.slot, instance.epoch);
            let _ = netif::remove_address(&instance.interface, instance.address);
            let _ = multicast(&instance.interface, instance.mac, false);
        }
    }
}
