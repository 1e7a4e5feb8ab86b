//! Floating addresses on interfaces through rtnetlink.

use futures::TryStreamExt as _;
use ipnet::IpNet;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, CacheInfo,
};

use super::{NetifError, Result};

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(NetifError::Runtime)
}

/// What failed, for [`NetifError::Netlink`].
fn failed(doing: String) -> impl FnOnce(rtnetlink::Error) -> NetifError {
    move |source| NetifError::Netlink { doing, source }
}

fn index(handle: &rtnetlink::Handle, interface: &str) -> impl Future<Output = Result<u32>> {
    let handle = handle.clone();
    let interface = interface.to_owned();
    async move {
        let link = handle
            .link()
            .get()
            .match_name(interface.clone())
            .execute()
            .try_next()
            .await
            .map_err(failed(format!("looking up {interface}")))?
            .ok_or_else(|| NetifError::NoInterface(interface.clone()))?;
        Ok(link.header.index)
    }
}

/// Adds `address` to `interface`; present already is fine. IPv4 addresses carry `label`
/// (`eth0:1` style). IPv6 addresses have no labels and are added without duplicate-address
/// detection (`nodad`): the data path defends the address for its owner, and an address whose
/// detection heard the old owner (or a probe answered on its behalf) would end up `dadfailed`
/// and unusable; and deprecated (see below). One left `tentative` or `dadfailed` by someone
/// else is replaced. The kernel joins the address's solicited-node group either way.
pub fn add_address(interface: &str, address: IpNet, label: &str) -> Result<()> {
    runtime()?.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetifError::Socket)?;
        tokio::spawn(connection);
        let index = index(&handle, interface).await?;
        if address.addr().is_ipv6()
            && let Some(present) = find(&handle, interface, index, address).await?
            && flags(&present).intersects(AddressFlags::Dadfailed | AddressFlags::Tentative)
        {
            handle
                .address()
                .del(present)
                .execute()
                .await
                .map_err(failed(format!(
                    "removing {address} from {interface} (left tentative or dadfailed)"
                )))?;
        }
        let mut request = handle
            .address()
            .add(index, address.addr(), address.prefix_len())
            .replace();
        let message = request.message_mut();
        match address {
            IpNet::V4(_) => message
                .attributes
                .push(AddressAttribute::Label(label.to_owned())),
            IpNet::V6(_) => {
                message.header.flags |= AddressHeaderFlags::Nodad;
                message
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
                // Deprecated (preferred lifetime 0, valid forever): source address selection
                // never picks it (RFC 6724 rule 3), so the kernel's own traffic and its
                // neighbor solicitations leave from the interface's real address, as IPv4's
                // `arp_announce = 2` has it; traffic to the address is received all the same.
                let mut lifetimes = CacheInfo::default();
                lifetimes.ifa_preferred = 0;
                lifetimes.ifa_valid = u32::MAX;
                message
                    .attributes
                    .push(AddressAttribute::CacheInfo(lifetimes));
            }
        }
        let what = match address {
            IpNet::V4(_) => format!("adding {address} to {interface} as {label}"),
            IpNet::V6(_) => format!("adding {address} to {interface} (nodad)"),
        };
        request.execute().await.map_err(failed(what))
    })
}

/// The address flags of a message: the attribute when present (it holds all 32 bits), else
/// the header's byte.
fn flags(message: &AddressMessage) -> AddressFlags {
    message
        .attributes
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Flags(flags) => Some(*flags),
            _ => None,
        })
        .unwrap_or_else(|| AddressFlags::from_bits_retain(u32::from(message.header.flags.bits())))
}

/// `address` (with its prefix length) on the interface, if present.
async fn find(
    handle: &rtnetlink::Handle,
    interface: &str,
    index: u32,
    address: IpNet,
) -> Result<Option<AddressMessage>> {
    let mut addresses = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(message) = addresses
        .try_next()
        .await
        .map_err(failed(format!("listing the addresses of {interface}")))?
    {
        // IPv6 messages name the address in `Address`, IPv4 ones in `Local` (and `Address`,
        // which is the peer's on point-to-point links). The kernel knows an IPv6 address by
        // the address alone, whatever its prefix length; an IPv4 one by both.
        let matches = (address.addr().is_ipv6()
            || message.header.prefix_len == address.prefix_len())
            && message.attributes.iter().any(|a| match a {
                AddressAttribute::Local(ip) => *ip == address.addr(),
                AddressAttribute::Address(ip) => address.addr().is_ipv6() && *ip == address.addr(),
                _ => false,
            });
        if matches {
            return Ok(Some(message));
        }
    }
    Ok(None)
}

/// Removes `address` from `interface`; absent already is fine.
pub fn remove_address(interface: &str, address: IpNet) -> Result<()> {
    runtime()?.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetifError::Socket)?;
        tokio::spawn(connection);
        let index = index(&handle, interface).await?;
        match find(&handle, interface, index, address).await? {
            Some(message) => handle
                .address()
                .del(message)
                .execute()
                .await
                .map_err(failed(format!("removing {address} from {interface}"))),
            None => Ok(()),
        }
    })
}
