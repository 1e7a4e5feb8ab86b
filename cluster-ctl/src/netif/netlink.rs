//! Floating addresses on interfaces through rtnetlink.

use std::net::IpAddr;

use anyhow::{Context as _, Result, anyhow};
use futures::TryStreamExt as _;
use ipnet::Ipv4Net;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("tokio runtime for rtnetlink")
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
            .with_context(|| format!("looking up {interface}"))?
            .ok_or_else(|| anyhow!("no interface {interface}"))?;
        Ok(link.header.index)
    }
}

/// Adds `address` to `interface` with `label` (`eth0:1` style); present already is fine.
pub fn add_address(interface: &str, address: Ipv4Net, label: &str) -> Result<()> {
    runtime()?.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection().context("netlink socket")?;
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
        request
            .execute()
            .await
            .with_context(|| format!("adding {address} to {interface} as {label}"))
    })
}

/// Removes `address` from `interface`; absent already is fine.
pub fn remove_address(interface: &str, address: Ipv4Net) -> Result<()> {
    runtime()?.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection().context("netlink socket")?;
        tokio::spawn(connection);
        let index = index(&handle, interface).await?;
        let mut addresses = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut found: Option<AddressMessage> = None;
        while let Some(message) = addresses.try_next().await? {
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
                .with_context(|| format!("removing {address} from {interface}")),
            None => Ok(()),
        }
    })
}
