//! Flow share (R-XDP-2, R-V6-3): IPv4 and IPv6 frames to a shared address's multicast MAC are
//! hashed to a bucket and passed only by the bucket's owner, under the flow share's lease.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    programs::XdpContext,
};
use core::mem::size_of;

use cluster_common::{
    BUCKET_TABLE_SIZE, Counters, FlowShare, HashMode, MAX_BUCKETS, MAX_FLOWSHARE_INTERFACES,
    flowhash::{bucket_of, fold_ipv6, hash_five_tuple, hash_src, hash_src_dst},
};

use crate::{
    Malformed,
    frame::{EthHdr, Frame, Ipv4Hdr, Ipv6Hdr, L4Ports, ipv4_raw, ipv6_raw, mac_words},
    lease::{Ownership, ownership},
    malformed,
    maps::FWC_FLOW_TABLES,
};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;

/// The flow share of the receiving interface when `eth` is addressed to its shared MAC.
#[inline(always)]
pub(crate) fn share_for(ctx: &XdpContext, eth: *mut EthHdr) -> Option<&'static FlowShare> {
    let ifindex = ctx.ingress_ifindex() as u32;
    let tables = &raw const FWC_FLOW_TABLES;
    // SAFETY: an index in bounds of the array (the modulo is a mask); the controller writes the
    // tables concurrently, which at worst mixes two settings for a frame.
    let share = unsafe { &(*tables).shares[(ifindex % MAX_FLOWSHARE_INTERFACES) as usize] };
    // SAFETY: `eth` is bounds-checked.
    (share.ifindex == ifindex && mac_words(share.mac) == unsafe { (*eth).dst }).then_some(share)
}

/// Filters an IPv4 frame to the shared MAC.
#[inline(always)]
pub(crate) fn filter(
    ctx: &XdpContext,
    frame: &Frame,
    eth: *mut EthHdr,
    l3: usize,
    counters: &mut Counters,
) -> u32 {
    let Some(share) = share_for(ctx, eth) else {
        return XDP_PASS;
    };
    let Some(ip) = frame.header::<Ipv4Hdr>(l3) else {
        return malformed(ctx, counters, Malformed::TruncatedIpv4);
    };
    // SAFETY: `ip` is bounds-checked.
    let version_ihl = unsafe { (*ip).version_ihl };
    if version_ihl >> 4 != 4 || version_ihl & 0x0f < 5 {
        return malformed(ctx, counters, Malformed::BadIpv4Header);
    }
    // The lease before the header fields: its lookup is a call to the compiler, and whatever is
    // live across a call is spilled to the stack and loaded back.
    let mine = ownership(&share.lease) == Ownership::Owned && {
        // SAFETY: `ip` is bounds-checked.
        let (protocol, flags_fragment, src, dst) = unsafe {
            (
                (*ip).protocol,
                u16::from_be((*ip).flags_fragment),
                ipv4_raw((*ip).src),
                ipv4_raw((*ip).dst),
            )
        };
        let hash = match HashMode::from_u8(share.hash_mode) {
            Some(HashMode::Src) => hash_src(share.seed, src),
            Some(HashMode::SrcDst) | None => hash_src_dst(share.seed, src, dst),
            Some(HashMode::FiveTuple) => {
                // Fragments (more-fragments flag or an offset) carry ports only in the first
                // one, so every fragment hashes without ports to land in one bucket.
                let fragmented = flags_fragment & 0x3fff != 0;
                let (src_port, dst_port) = if has_ports(protocol) && !fragmented {
                    // Read again here rather than kept from the check above (see the lease).
                    // SAFETY: `ip` is bounds-checked.
                    let header_len = ((unsafe { (*ip).version_ihl } & 0x0f) as usize) * 4;
                    let Some(ports) = frame.header::<L4Ports>(l3 + header_len) else {
                        return malformed(ctx, counters, Malformed::TruncatedPorts);
                    };
                    // SAFETY: bounds-checked.
                    unsafe { ((*ports).src, (*ports).dst) }
                } else {
                    (0, 0)
                };
                hash_five_tuple(share.seed, protocol, src, src_port, dst, dst_port)
            }
        };
        owns_bucket(share, hash)
    };
    verdict(share, mine, eth, counters)
}

/// Filters an IPv6 frame to the shared MAC (`share`, from [`share_for`]): the addresses are
/// folded to one word each ([`fold_ipv6`]) and hashed as IPv4's are. Ports are read when TCP,
/// UDP or SCTP follows the fixed header; a packet with extension headers (a fragment among
/// them) hashes without ports, under its first extension header's number.
#[inline(always)]
pub(crate) fn filter6(
    ctx: &XdpContext,
    frame: &Frame,
    eth: *mut EthHdr,
    l3: usize,
    share: &FlowShare,
    counters: &mut Counters,
) -> u32 {
    let Some(ip) = frame.header::<Ipv6Hdr>(l3) else {
        return malformed(ctx, counters, Malformed::TruncatedIpv6);
    };
    // SAFETY: `ip` is bounds-checked.
    if u16::from_be(unsafe { (*ip).version_class_flow[0] }) >> 12 != 6 {
        return malformed(ctx, counters, Malformed::BadIpv6Header);
    }
    let mine = ownership(&share.lease) == Ownership::Owned && {
        // SAFETY: `ip` is bounds-checked.
        let (next_header, src, dst) = unsafe {
            (
                (*ip).next_header,
                fold_ipv6(ipv6_raw((*ip).src)),
                fold_ipv6(ipv6_raw((*ip).dst)),
            )
        };
        let hash = match HashMode::from_u8(share.hash_mode) {
            Some(HashMode::Src) => hash_src(share.seed, src),
            Some(HashMode::SrcDst) | None => hash_src_dst(share.seed, src, dst),
            Some(HashMode::FiveTuple) => {
                let (src_port, dst_port) = if has_ports(next_header) {
                    let Some(ports) = frame.header::<L4Ports>(l3 + size_of::<Ipv6Hdr>()) else {
                        return malformed(ctx, counters, Malformed::TruncatedPorts);
                    };
                    // SAFETY: bounds-checked.
                    unsafe { ((*ports).src, (*ports).dst) }
                } else {
                    (0, 0)
                };
                hash_five_tuple(share.seed, next_header, src, src_port, dst, dst_port)
            }
        };
        owns_bucket(share, hash)
    };
    verdict(share, mine, eth, counters)
}

/// Whether a protocol's header starts with ports. Not short-circuited: three compares are
/// cheaper than three branches.
#[inline(always)]
fn has_ports(protocol: u8) -> bool {
    (protocol == IPPROTO_TCP) | (protocol == IPPROTO_UDP) | (protocol == IPPROTO_SCTP)
}

/// Whether this node owns the bucket of `hash`.
#[inline(always)]
fn owns_bucket(share: &FlowShare, hash: u32) -> bool {
    let tables = &raw const FWC_FLOW_TABLES;
    // The controller keeps `table` and `buckets` in range; were they not, the index is still
    // masked into the table and a frame at worst lands in a wrong bucket.
    let index = share.table.wrapping_mul(MAX_BUCKETS) + bucket_of(hash, share.buckets);
    // SAFETY: an index in bounds of the array (the modulo is a mask).
    let owner = unsafe { (*tables).buckets[(index % BUCKET_TABLE_SIZE) as usize].node };
    owner == share.node_id
}

/// Drops a frame of a bucket this node does not own; passes one it owns, addressed to this
/// host's MAC.
#[inline(always)]
fn verdict(share: &FlowShare, mine: bool, eth: *mut EthHdr, counters: &mut Counters) -> u32 {
    if !mine {
        counters.flow_dropped += 1;
        return XDP_DROP;
    }
    counters.flow_passed += 1;
    // Word by word: a plain copy between map value and frame, which may alias as far as the
    // compiler knows, becomes a call to a byte-wise memmove.
    let mac = mac_words(share.local_mac);
    for (i, word) in mac.into_iter().enumerate() {
        // SAFETY: `eth` is bounds-checked.
        unsafe { core::ptr::write_volatile(&raw mut (*eth).dst[i], word) };
    }
    XDP_PASS
}
