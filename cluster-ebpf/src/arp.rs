//! ARP (R-XDP-1, R-XDP-7): requests for a cluster address this node owns are answered in place
//! (`XDP_TX`); requests for one it does not own, or whose lease ran out, are dropped so that the
//! kernel cannot answer them either.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    programs::XdpContext,
};
use cluster_common::{ADDRESS_BUCKETS, AddressEntry, AddressKey, Counters, address_buckets};

use crate::{
    Malformed, answered_ifindex,
    frame::{ArpHdr, ETH_P_IP, EthHdr, Frame, ipv4_raw, mac_words},
    lease::{Ownership, ownership},
    malformed,
    maps::{FWC_ADDR_HITS, FWC_ADDRESSES, FWC_NODE},
};

const ARP_HTYPE_ETHERNET: u16 = 1;
pub const ARP_OP_REQUEST: u16 = 1;
pub const ARP_OP_REPLY: u16 = 2;

#[inline(always)]
pub(crate) fn respond(
    ctx: &XdpContext,
    frame: &Frame,
    eth: *mut EthHdr,
    l3: usize,
    counters: &mut Counters,
) -> u32 {
    let Some(arp) = frame.header::<ArpHdr>(l3) else {
        return malformed(ctx, counters, Malformed::TruncatedArp);
    };
    // SAFETY: `arp` and `eth` are bounds-checked pointers into the frame.
    unsafe {
        if u16::from_be((*arp).htype) != ARP_HTYPE_ETHERNET
            || u16::from_be((*arp).ptype) != ETH_P_IP
            || (*arp).hlen != 6
            || (*arp).plen != 4
        {
            return malformed(ctx, counters, Malformed::ArpNotEthernetIpv4);
        }
        if u16::from_be((*arp).oper) != ARP_OP_REQUEST {
            return XDP_PASS;
        }
        counters.arp_requests += 1;
        let target = ipv4_raw((*arp).tpa);
        // Gratuitous ARP announces the sender's own address: nothing to answer.
        if ipv4_raw((*arp).spa) == target {
            return XDP_PASS;
        }
        let Some(ifindex) = answered_ifindex(ctx, frame, l3) else {
            return malformed(ctx, counters, Malformed::TruncatedVlan);
        };
        let key = AddressKey {
            ifindex,
            addr: target,
        };
        let Some(entry) = find_address(&key) else {
            return XDP_PASS;
        };
        // A map value: valid for the whole run of the program.
        let entry = &*entry;
        match ownership(&entry.lease) {
            Ownership::Owned => {}
            Ownership::NotOwned => {
                counters.arp_not_owned += 1;
                return XDP_DROP;
            }
            Ownership::Expired => {
                counters.arp_lease_expired += 1;
                return XDP_DROP;
            }
        }
        write_reply(eth, arp, entry);
        counters.arp_replies += 1;
        if let Some(hits) = FWC_ADDR_HITS.get_ptr_mut(entry.hit_slot) {
            (*hits).replies += 1;
        }
    }
    XDP_TX
}

/// The address table's entry for `key`: one of the two slots of one of its two candidate buckets
/// in the half in use.
#[inline(always)]
fn find_address(key: &AddressKey) -> Option<*const AddressEntry> {
    let half = FWC_NODE.get(0).map_or(0, |n| n.address_half & 1);
    let word = key.word();
    let (first, second) = address_buckets(word);
    for bucket in [first, second] {
        let bucket = FWC_ADDRESSES.get(half * ADDRESS_BUCKETS + bucket)?;
        for slot in &bucket.slots {
            // SAFETY: the key is two aligned words at the start of the slot (8-aligned bucket).
            if unsafe { core::ptr::read(&raw const slot.key as *const u64) } == word {
                // In place: a copy would go through the stack.
                return Some(&raw const slot.entry);
            }
        }
    }
    None
}

/// Turns the ARP request in place into the reply from `entry.mac`.
///
/// # Safety
/// `eth` and `arp` must be bounds-checked pointers into the same frame.
#[inline(always)]
unsafe fn write_reply(eth: *mut EthHdr, arp: *mut ArpHdr, entry: &AddressEntry) {
    // Every field is read into scalars before the first write: arrays copied between
    // overlapping places of the frame would go through the stack.
    // SAFETY: the caller's contract (bounds-checked pointers into one frame).
    unsafe {
        let [r0, r1, r2] = (*arp).sha;
        let [e0, e1, e2] = (*eth).src;
        let [requester_ip0, requester_ip1] = (*arp).spa;
        let [answered_ip0, answered_ip1] = (*arp).tpa;
        let [m0, m1, m2] = mac_words(entry.mac);
        let [s0, s1, s2] = mac_words(entry.eth_source);
        (*eth).dst = [e0, e1, e2];
        (*eth).src = [s0, s1, s2];
        (*arp).oper = ARP_OP_REPLY.to_be();
        (*arp).sha = [m0, m1, m2];
        (*arp).spa = [answered_ip0, answered_ip1];
        (*arp).tha = [r0, r1, r2];
        (*arp).tpa = [requester_ip0, requester_ip1];
    }
}
