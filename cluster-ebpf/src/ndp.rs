//! Neighbor Discovery (R-V6-1): Neighbor Solicitations for a cluster IPv6 address this node
//! owns are answered in place with a Neighbor Advertisement (`XDP_TX`), exactly as ARP requests
//! are ([`crate::arp`]); those for one it does not own, or whose lease ran out, are dropped so
//! that the kernel cannot answer them either.
//!
//! All three kinds of solicitation are answered: multicast to the solicited-node address,
//! unicast (reachability confirmation), and duplicate-address detection from `::`, which is
//! answered to all nodes so that the prober sees the address is taken. A solicitation that RFC
//! 4861 7.1.1 calls invalid (hop limit not 255, code not 0, shorter than 24 bytes) is passed
//! untouched and counted as malformed, for the kernel to discard. So is any IPv6 packet whose
//! ICMPv6 header follows extension headers: a solicitation carries none, and the kernel sees
//! the rest.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::bpf_xdp_adjust_tail,
    programs::XdpContext,
};
use cluster_common::{
    ADDRESS6_BUCKETS, AddressEntry, AddressKey6, Counters, ENTRY_ROUTER, address6_buckets,
};

use crate::{
    Malformed, answered_ifindex,
    frame::{EthHdr, Frame, Ipv6Hdr, Ipv6Words, LinkLayerOption, NeighborMessage, mac_words},
    lease::{Ownership, ownership},
    malformed,
    maps::{FWC_ADDR_HITS, FWC_ADDR6, FWC_NODE},
};

pub const IPPROTO_ICMPV6: u8 = 58;
pub const ND_NEIGHBOR_SOLICIT: u8 = 135;
pub const ND_NEIGHBOR_ADVERT: u8 = 136;
const ND_OPT_TARGET_LINK_LAYER: u8 = 2;
/// Advertisement flags (RFC 4861 4.4).
pub const NA_ROUTER: u8 = 0x80;
pub const NA_SOLICITED: u8 = 0x40;
pub const NA_OVERRIDE: u8 = 0x20;
/// The length of the advertisement: the message and its target link-layer option.
const NA_LEN: usize =
    core::mem::size_of::<NeighborMessage>() + core::mem::size_of::<LinkLayerOption>();
/// `ff02::1`, all nodes, in wire-order words.
const ALL_NODES: Ipv6Words = [
    u16::from_ne_bytes([0xff, 0x02]),
    0,
    0,
    0,
    0,
    0,
    0,
    u16::from_ne_bytes([0, 1]),
];
/// The Ethernet multicast address of all nodes, `33:33:00:00:00:01`, as words.
const ALL_NODES_MAC: [u16; 3] = [
    u16::from_ne_bytes([0x33, 0x33]),
    0,
    u16::from_ne_bytes([0, 1]),
];

/// An IPv6 frame (`ethertype` 0x86dd) at layer-3 offset `l3`: answered when it is a Neighbor
/// Solicitation for an owned cluster address, dropped when for one not owned, else passed.
#[inline(always)]
pub(crate) fn respond(
    ctx: &XdpContext,
    frame: &Frame,
    eth: *mut EthHdr,
    l3: usize,
    counters: &mut Counters,
) -> u32 {
    let Some(ip) = frame.header::<Ipv6Hdr>(l3) else {
        return malformed(ctx, counters, Malformed::TruncatedIpv6);
    };
    let icmp_at = l3 + core::mem::size_of::<Ipv6Hdr>();
    // SAFETY: `ip` and `eth` are bounds-checked pointers into the frame; so is every pointer
    // below, each from `Frame::header`.
    unsafe {
        if (*ip).next_header != IPPROTO_ICMPV6 {
            return XDP_PASS;
        }
        // Other ICMPv6 messages may be shorter than a solicitation: the type first.
        let Some(kind) = frame.header::<[u8; 2]>(icmp_at) else {
            return malformed(ctx, counters, Malformed::TruncatedIcmpv6);
        };
        if (*kind)[0] != ND_NEIGHBOR_SOLICIT {
            return XDP_PASS;
        }
        let Some(ns) = frame.header::<NeighborMessage>(icmp_at) else {
            return malformed(ctx, counters, Malformed::TruncatedIcmpv6);
        };
        counters.ns_requests += 1;
        if (*ip).hop_limit != 255
            || (*ns).code != 0
            || (u16::from_be((*ip).payload_len) as usize) < core::mem::size_of::<NeighborMessage>()
        {
            return malformed(ctx, counters, Malformed::InvalidSolicitation);
        }
        let Some(ifindex) = answered_ifindex(ctx, frame, l3) else {
            return malformed(ctx, counters, Malformed::TruncatedVlan);
        };
        let target = (*ns).target;
        let key = AddressKey6 {
            ifindex,
            _pad: 0,
            addr: core::mem::transmute::<Ipv6Words, [u32; 4]>(target),
        };
        let Some(entry) = find_address6(&key) else {
            return XDP_PASS;
        };
        // A map value: valid for the whole run of the program.
        let entry = &*entry;
        match ownership(&entry.lease) {
            Ownership::Owned => {}
            Ownership::NotOwned => {
                counters.ns_not_owned += 1;
                return XDP_DROP;
            }
            Ownership::Expired => {
                counters.ns_lease_expired += 1;
                return XDP_DROP;
            }
        }
        // Everything the advertisement needs from the solicitation, before the frame changes.
        let requester_mac = (*eth).src;
        let solicitor = (*ip).src;
        let duplicate_address_detection = (solicitor[0]
            | solicitor[1]
            | solicitor[2]
            | solicitor[3]
            | solicitor[4]
            | solicitor[5]
            | solicitor[6]
            | solicitor[7])
            == 0;
        let hit_slot = entry.hit_slot;
        let (mac, eth_source, router) = (
            mac_words(entry.mac),
            mac_words(entry.eth_source),
            entry.flags & ENTRY_ROUTER != 0,
        );
        // The advertisement's length: a solicitation without a source link-layer option (all
        // of duplicate-address detection) is 8 bytes shorter; one with padding is longer.
        let length = (ctx.data_end() - ctx.data()) as i32;
        let delta = (icmp_at + NA_LEN) as i32 - length;
        if delta != 0 && bpf_xdp_adjust_tail(ctx.ctx, delta) != 0 {
            return malformed(ctx, counters, Malformed::NoRoomForAdvertisement);
        }
        // The frame may have moved: every header again, bounds-checked.
        let frame = Frame::new(ctx);
        let (Some(eth), Some(ip), Some(na), Some(option)) = (
            frame.header::<EthHdr>(0),
            frame.header::<Ipv6Hdr>(l3),
            frame.header::<NeighborMessage>(icmp_at),
            frame.header::<LinkLayerOption>(icmp_at + core::mem::size_of::<NeighborMessage>()),
        ) else {
            return malformed(ctx, counters, Malformed::NoRoomForAdvertisement);
        };
        let (destination, destination_mac, flags) = if duplicate_address_detection {
            // RFC 4861 7.2.4: to all nodes, not solicited.
            (ALL_NODES, ALL_NODES_MAC, NA_OVERRIDE)
        } else {
            (solicitor, requester_mac, NA_SOLICITED | NA_OVERRIDE)
        };
        let flags = if router { flags | NA_ROUTER } else { flags };
        (*eth).dst = destination_mac;
        (*eth).src = eth_source;
        (*ip).version_class_flow = [0x6000u16.to_be(), 0];
        (*ip).payload_len = (NA_LEN as u16).to_be();
        (*ip).next_header = IPPROTO_ICMPV6;
        (*ip).hop_limit = 255;
        (*ip).src = target;
        (*ip).dst = destination;
        (*na).kind = ND_NEIGHBOR_ADVERT;
        (*na).code = 0;
        (*na).flags_reserved = [u16::from_ne_bytes([flags, 0]), 0];
        (*na).target = target;
        (*option).kind = ND_OPT_TARGET_LINK_LAYER;
        (*option).len = 1;
        (*option).mac = mac;
        (*na).checksum = checksum(&target, &destination, flags, &mac);
        counters.na_sent += 1;
        if let Some(hits) = FWC_ADDR_HITS.get_ptr_mut(hit_slot) {
            (*hits).replies += 1;
        }
    }
    XDP_TX
}

/// The ICMPv6 checksum of the advertisement from `source` to `destination`, summed from the
/// values written rather than read back from the frame. Words are summed as they are stored
/// (wire order): a ones' complement sum is the same in either byte order.
#[inline(always)]
fn checksum(source: &Ipv6Words, destination: &Ipv6Words, flags: u8, mac: &[u16; 3]) -> u16 {
    // Spelled out word by word: an iterator over the arrays becomes a loop whose end the
    // verifier cannot follow.
    let address = |w: &Ipv6Words| {
        u32::from(w[0])
            + u32::from(w[1])
            + u32::from(w[2])
            + u32::from(w[3])
            + u32::from(w[4])
            + u32::from(w[5])
            + u32::from(w[6])
            + u32::from(w[7])
    };
    // Pseudo-header: addresses, the upper-layer length and the next header; then the message
    // (checksum field 0), whose target is the source address, and its option.
    let mut sum: u32 = 2 * address(source)
        + address(destination)
        + u32::from((NA_LEN as u16).to_be())
        + u32::from((IPPROTO_ICMPV6 as u16).to_be())
        + u32::from(u16::from_ne_bytes([ND_NEIGHBOR_ADVERT, 0]))
        + u32::from(u16::from_ne_bytes([flags, 0]))
        + u32::from(u16::from_ne_bytes([ND_OPT_TARGET_LINK_LAYER, 1]))
        + u32::from(mac[0])
        + u32::from(mac[1])
        + u32::from(mac[2]);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The IPv6 address table's entry for `key` (see `arp::find_address`).
#[inline(always)]
fn find_address6(key: &AddressKey6) -> Option<*const AddressEntry> {
    let half = FWC_NODE.get(0).map_or(0, |n| n.address_half & 1);
    let (first, second) = address6_buckets(key.fold());
    for bucket in [first, second] {
        let bucket = FWC_ADDR6.get(half * ADDRESS6_BUCKETS + bucket)?;
        for slot in &bucket.slots {
            // Word by word: an array comparison could become a call to `bcmp`, which BPF lacks.
            let [a0, a1, a2, a3] = slot.key.addr;
            let [b0, b1, b2, b3] = key.addr;
            if slot.key.ifindex == key.ifindex && a0 == b0 && a1 == b1 && a2 == b2 && a3 == b3 {
                // In place: a copy would go through the stack.
                return Some(&raw const slot.entry);
            }
        }
    }
    None
}
