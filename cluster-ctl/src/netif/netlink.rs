//! Floating addresses on interfaces through rtnetlink.

use std::net::IpAddr;

use futures::TryStreamExt as _;
use ipnet::Ipv4Net;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};

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

/// Adds `address` to `interface` with `label` (`eth0:1` style); present already is fine.
pub fn add_address(interface: &str, address: Ipv4Net, label: &str) -> Result<()> {
    runtime()?.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetifError::Socket)?;
        tokio::spawn(connection);
        let index = index(&handle, interface).await?;
        let mut request = handle
            .address()
            .add(index, IpAddr::V4(address.addr()), address.prefix_len())
            .replace();
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::Label(label.to_owned()));
        request.execute().await.map_err(failed(format!(
            "adding {address} to {interface} as {label}"
        )))
    })
}

/// Removes `address` from `interface`; absent already is fine.
pub fn remove_address(interface: &str, address: Ipv4Net) -> Result<()> {
    runtime()?.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetifError::Socket)?;
        tokio::spawn(connection);
        let index = index(&handle, interface).await?;
        let mut addresses = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut found: Option<AddressMessage> = None;
        while let Some(message) = addresses
            .try_next()
            .await
            .map_err(failed(format!("listing the addresses of {interface}")))?
        {
            let matches = message.header.prefix_len == address.prefix_len()
                && message.attributes.iter().any(|a| {
                    matches!(a, AddressAttribute::Local(IpAddr::V4(ip)) if *ip == address.addr())
                });
            if matches {
                found = Some(message);
                break;
            }
        }
        match found {
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
