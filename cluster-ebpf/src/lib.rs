//! fwcluster's XDP data path.
//!
//! One program per data interface:
//! - answers ARP requests for cluster addresses this node owns (R-XDP-1) by rewriting the request
//!   into a reply in place and `XDP_TX`, also behind one 802.1Q/802.1ad tag;
//! - drops ARP requests for cluster addresses it does not own, or whose lease has expired
//!   (R-XDP-4 self-fencing, R-XDP-7), so the kernel cannot answer them either;
//! - for IPv4 and IPv6 frames to a flow-share address (multicast MAC), passes the buckets this
//!   node owns and drops the rest (R-XDP-2, R-V6-3);
//! - answers IPv6 Neighbor Solicitations for cluster addresses this node owns, and drops those
//!   for addresses it does not own, in the same way (R-V6-1, [`ndp`]);
//! - passes everything else untouched. Truncated or malformed frames are passed and counted.
//!
//! This library holds the dispatch by protocol ([`run`]); [`arp`] answers, [`lease`] decides
//! ownership, [`flowshare`] filters, [`frame`] holds every bounds-checked header access, [`maps`]
//! the maps. Two objects are built from it, one per binary: the product's (`src/main.rs`, the
//! one program `fwcluster_xdp`) and the benchmark's (`src/bin/cluster-ebpf-bench.rs`), which the
//! controller never loads. (Being a library also makes the package a build-dependency of
//! cluster-ctl, so cargo rebuilds the objects when it changes.)
// Built for bpfel-unknown-none by cluster-ctl/build.rs. On the host the same code compiles as a
// normal library (so `cargo build/clippy --workspace` check it).
#![cfg_attr(target_arch = "bpf", no_std)]

pub mod arp;
pub mod flowshare;
pub mod frame;
pub mod lease;
pub mod maps;
pub mod ndp;

use aya_ebpf::{bindings::xdp_action::XDP_PASS, programs::XdpContext};
use aya_log_ebpf::debug;
use cluster_common::Counters;
use frame::{ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, EthHdr, Frame, VlanHdr};
use maps::FWC_COUNTERS;

/// The data path: what `fwcluster_xdp` does with every frame.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    // An array map with one entry: the lookup cannot fail. Checked once here, so that the paths
    // below count without a test of their own.
    let Some(counters) = FWC_COUNTERS.get_ptr_mut(0) else {
        return XDP_PASS;
    };
    // SAFETY: per-CPU slot of this CPU; XDP programs do not nest on one CPU, and the slot is a
    // map value valid for the whole run.
    let counters = unsafe { &mut *counters };
    counters.packets += 1;
    process(ctx, &Frame::new(ctx), counters)
}

/// A frame that cannot be parsed: counted, logged at debug level, and passed. Called where the
/// parse fails and returned from there: a `Result` carried to one exit packs and unpacks the
/// action and the reason on every frame.
#[inline(always)]
pub(crate) fn malformed(ctx: &XdpContext, counters: &mut Counters, reason: Malformed) -> u32 {
    counters.malformed += 1;
    debug!(ctx, "malformed frame passed: {}", reason.reason());
    XDP_PASS
}

/// Why a frame cannot be parsed; logged at debug level. A plain code rather than the message
/// itself: the hot path then sets one register before each bounds check instead of a 64-bit
/// string address and its length.
#[derive(Clone, Copy)]
pub enum Malformed {
    ShortEthernet,
    TruncatedVlan,
    TruncatedArp,
    ArpNotEthernetIpv4,
    TruncatedIpv4,
    BadIpv4Header,
    TruncatedPorts,
    TruncatedIpv6,
    BadIpv6Header,
    TruncatedIcmpv6,
    InvalidSolicitation,
    NoRoomForAdvertisement,
}

impl Malformed {
    fn reason(self) -> &'static str {
        match self {
            Self::ShortEthernet => "shorter than Ethernet",
            Self::TruncatedVlan => "truncated VLAN tag",
            Self::TruncatedArp => "truncated ARP",
            Self::ArpNotEthernetIpv4 => "ARP not Ethernet/IPv4",
            Self::TruncatedIpv4 => "truncated IPv4",
            Self::BadIpv4Header => "bad IPv4 header",
            Self::TruncatedPorts => "truncated L4 ports",
            Self::TruncatedIpv6 => "truncated IPv6",
            Self::BadIpv6Header => "bad IPv6 header",
            Self::TruncatedIcmpv6 => "truncated ICMPv6",
            Self::InvalidSolicitation => "invalid Neighbor Solicitation (RFC 4861 7.1.1)",
            Self::NoRoomForAdvertisement => "no room for the Neighbor Advertisement",
        }
    }
}

#[inline(always)]
fn process(ctx: &XdpContext, frame: &Frame, counters: &mut Counters) -> u32 {
    let Some(eth) = frame.header::<EthHdr>(0) else {
        return malformed(ctx, counters, Malformed::ShortEthernet);
    };
    // SAFETY: `eth` is the frame's bounds-checked Ethernet header.
    let (ethertype, l3) = match unsafe { frame.l3(eth) } {
        Ok(found) => found,
        Err(reason) => return malformed(ctx, counters, reason),
    };
    match ethertype {
        ETH_P_ARP => arp::respond(ctx, frame, eth, l3, counters),
        // Flow-share traffic is addressed to a multicast MAC; unicast frames skip the lookup.
        // SAFETY: `eth` was bounds-checked by `Frame::header`.
        ETH_P_IP if unsafe { (*eth).dst[0] } & 1 == 1 => {
            flowshare::filter(ctx, frame, eth, l3, counters)
        }
        // IPv6 to a flow share's MAC is filtered; everything else IPv6 (solicitations come to
        // solicited-node MACs) goes to Neighbor Discovery.
        // SAFETY: `eth` was bounds-checked by `Frame::header`.
        ETH_P_IPV6 => match unsafe { (*eth).dst[0] } & 1 == 1 {
            true => match flowshare::share_for(ctx, eth) {
                Some(share) => flowshare::filter6(ctx, frame, eth, l3, share, counters),
                None => ndp::respond(ctx, frame, eth, l3, counters),
            },
            false => ndp::respond(ctx, frame, eth, l3, counters),
        },
        _ => XDP_PASS,
    }
}

/// The interface index a request arriving at layer-3 offset `l3` is looked up under: the
/// receiving interface's, or for a tagged frame that of its VLAN (an address of the interface
/// itself is not answered on the interface's VLANs). `None` for a truncated tag.
#[inline(always)]
pub(crate) fn answered_ifindex(ctx: &XdpContext, frame: &Frame, l3: usize) -> Option<u32> {
    let ifindex = ctx.ingress_ifindex() as u32;
    if l3 == core::mem::size_of::<EthHdr>() {
        return Some(ifindex);
    }
    let vlan = frame.header::<VlanHdr>(core::mem::size_of::<EthHdr>())?;
    // SAFETY: bounds-checked by `header`.
    let tci = u16::from_be(unsafe { (*vlan).tci });
    Some(cluster_common::vlan_key_ifindex(ifindex, tci))
}
