//! `xdp-keeper`: the data-path half of a controller, for lease and adoption tests: opens (or
//! adopts) a node's pinned data path, attaches it, owns one address under one lease slot and
//! renews the lease every interval until killed. On start it prints
//! `ready <Loaded|Adopted> epoch <n> link <new|adopted>`.

use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use clap::Parser;
use cluster_common::{AddressEntry, AddressKey, AddressKind};
use cluster_ctl::dataplane::{self, Dataplane, ModePreference};
use fwcluster_lab::arp::interface_mac;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    pin_dir: PathBuf,
    #[arg(long)]
    ifname: String,
    #[arg(long)]
    address: Ipv4Addr,
    #[arg(long, default_value_t = 0)]
    slot: u32,
    #[arg(long, default_value_t = 0)]
    node_id: u32,
    #[arg(long, default_value_t = 50)]
    interval_ms: u64,
    #[arg(long, default_value_t = 1000)]
    lease_ms: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let lease = Duration::from_millis(args.lease_ms);
    let mut dp = Dataplane::open(&args.pin_dir, args.node_id, false).context("open")?;
    let attachment = dp.attach(&args.ifname, ModePreference::Auto)?;
    let key = AddressKey {
        ifindex: dataplane::ifindex(&args.ifname)?,
        addr: u32::from_ne_bytes(args.address.octets()),
    };
    let mac = interface_mac(&args.ifname)?;
    let entry = AddressEntry::new(args.slot, args.slot, AddressKind::Fip, mac, mac);
    dp.set_addresses([(&key, &entry)])?;
    let epoch = match dp.lease(args.slot)? {
        // Adopting a live lease: keep its epoch, renew before anything else.
        Some(current) if current.owned != 0 => {
            dp.renew(args.slot, current.epoch, lease)?;
            current.epoch
        }
        other => {
            let epoch = other.map_or(0, |l| l.epoch) + 1;
            dp.acquire(args.slot, epoch, lease)?;
            epoch
        }
    };
    println!(
        "ready {:?} epoch {epoch} link {}",
        dp.origin(),
        if attachment.adopted { "adopted" } else { "new" }
    );
    loop {
        std::thread::sleep(Duration::from_millis(args.interval_ms));
        dp.renew(args.slot, epoch, lease)?;
    }
}
