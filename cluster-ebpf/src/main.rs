//! fwcluster's XDP data path.
//!
//! One program per data interface:
//! - answers ARP requests for cluster addresses this node owns (R-XDP-1) by rewriting the request
//!   into a reply in place and `XDP_TX`, also behind one 802.1Q/802.1ad tag;
//! - drops ARP requests for cluster addresses it does not own, or whose lease has expired
//!   (R-XDP-4 self-fencing, R-XDP-7), so the kernel cannot answer them either;
//! - for IPv4 frames to a flow-share address (multicast MAC), passes the buckets this node owns
//!   and drops the rest (R-XDP-2);
//! - passes everything else untouched. Truncated or malformed frames are passed and counted.
// Built for bpfel-unknown-none by cluster-ctl/build.rs. On the host the same code compiles as a
// normal program (so `cargo build/clippy --workspace` check it) that only says where it belongs.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod frame;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    btf_maps::{Array, PerCpuArray},
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use cluster_common::{
    ADDRESS_BUCKETS, ADDRESS_TABLE_BUCKETS, AddressBucket, AddressEntry, AddressHits, AddressKey,
    BUCKET_TABLE_SIZE, Counters, FlowShareTables, HashMode, Lease, MAX_ADDRESSES, MAX_BUCKETS,
    MAX_FLOWSHARE_INTERFACES, MAX_LEASES, NodeConfig, address_buckets,
    flowhash::{bucket_of, hash_five_tuple, hash_src, hash_src_dst},
    vlan_key_ifindex,
};
use frame::{ArpHdr, EthHdr, Frame, Ipv4Hdr, L4Ports, VlanHdr, ipv4_raw, mac_words};

/// Memory-mapped so that the controller lays out the spare half in place.
#[btf_map]
static FWC_ADDRESSES: Array<
    AddressBucket,
    { ADDRESS_TABLE_BUCKETS as usize },
    { BPF_F_MMAPABLE as usize },
> = Array::new();
/// Memory-mapped: the controller renews a lease with one store.
#[btf_map]
static FWC_LEASES: Array<Lease, { MAX_LEASES as usize }, { BPF_F_MMAPABLE as usize }> =
    Array::new();
/// The flow-share tables as a map: declared for its definition only (typed value, so that bpftool
/// names the fields; memory-mapped, so that the controller reassigns buckets with plain stores).
/// The code reads the same map through [`FWC_FLOW_TABLES`].
#[btf_map]
static FWC_FLOW: Array<FlowShareTables, 1, { BPF_F_MMAPABLE as usize }> = Array::new();
/// [`FWC_FLOW`]'s value as a global variable (`cluster_common::FLOW_TABLES_SYMBOL` in
/// `cluster_common::FLOW_TABLES_SECTION`; the loader binds the section to the pinned map): read by
/// indexed loads, with no map lookup. Never written here.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".bss.fwc_flow")]
// SAFETY: plain integers and arrays of them, for which zero is a valid value.
static mut FWC_FLOW_TABLES: FlowShareTables = unsafe { core::mem::zeroed() };
#[btf_map]
static FWC_NODE: Array<NodeConfig, 1> = Array::new();
#[btf_map]
static FWC_COUNTERS: PerCpuArray<Counters, 1> = PerCpuArray::new();
#[btf_map]
static FWC_ADDR_HITS: PerCpuArray<AddressHits, { MAX_ADDRESSES as usize }> = PerCpuArray::new();

const BPF_F_MMAPABLE: u32 = 1 << 10;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IP: u16 = 0x0800;
const ARP_HTYPE_ETHERNET: u16 = 1;
const ARP_OP_REQUEST: u16 = 1;
const ARP_OP_REPLY: u16 = 2;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;

/// The data path program attached to every data interface.
#[xdp]
pub fn fwcluster_xdp(ctx: XdpContext) -> u32 {
    run(&ctx)
}

#[inline(always)]
fn run(ctx: &XdpContext) -> u32 {
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
fn malformed(ctx: &XdpContext, counters: &mut Counters, reason: Malformed) -> u32 {
    counters.malformed += 1;
    debug!(ctx, "malformed frame passed: {}", reason.reason());
    XDP_PASS
}

/// The benchmark's traffic generator, run by BPF_PROG_TEST_RUN in live-frames mode on the
/// generator's interface: sends every frame out (`XDP_TX` becomes a transmit there). Live frames
/// are recycled with whatever the receiver wrote into them, so the generator first undoes what a
/// responder does: an ARP reply is turned back into its request, and an IPv4 frame is addressed
/// to the multicast MAC of its destination again (RFC 1112 mapping; a flow-share filter rewrites
/// it to the node's own MAC). IPv4 frames then get a random source in the /20 of their source
/// address (4096 flows), with the header checksum updated to match (RFC 1624, from what the frame
/// holds). Loaded only by the benchmark.
#[xdp]
pub fn fwcluster_bench_gen(ctx: XdpContext) -> u32 {
    let frame = Frame::new(&ctx);
    let Some(eth) = frame.header::<EthHdr>(0) else {
        return XDP_TX;
    };
    let l3 = core::mem::size_of::<EthHdr>();
    // SAFETY: bounds-checked headers; helper without arguments.
    unsafe {
        match u16::from_be((*eth).ethertype) {
            ETH_P_ARP => {
                if let Some(arp) = frame.header::<ArpHdr>(l3)
                    && u16::from_be((*arp).oper) == ARP_OP_REPLY
                {
                    restore_request(&frame);
                }
            }
            ETH_P_IP => {
                if let Some(ip) = frame.header::<Ipv4Hdr>(l3) {
                    let dst = (*ip).dst;
                    (*eth).dst = [
                        0x0100_u16.to_be(),
                        (0x5e00 | (u16::from_be(dst[0]) & 0x7f)).to_be(),
                        dst[1],
                    ];
                    let old = u16::from_be((*ip).src[1]);
                    let new = (old & 0xf000) | (bpf_get_prandom_u32() & 0x0fff) as u16;
                    (*ip).src[1] = new.to_be();
                    let sum =
                        u32::from(!u16::from_be((*ip).checksum)) + u32::from(!old) + u32::from(new);
                    let sum = (sum & 0xffff) + (sum >> 16);
                    let sum = (sum & 0xffff) + (sum >> 16);
                    (*ip).checksum = (!(sum as u16)).to_be();
                }
            }
            _ => {}
        }
    }
    XDP_TX
}

/// The benchmark's receiver: counts every frame (`Counters::packets`) and drops it, so that
/// replies cost the generator's side as little as possible. Loaded only by the benchmark.
#[xdp]
pub fn fwcluster_bench_sink(_ctx: XdpContext) -> u32 {
    if let Some(counters) = FWC_COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot of this CPU.
        unsafe { (*counters).packets += 1 };
    }
    XDP_DROP
}

/// A trivial program (`XDP_PASS`), loaded only by the benchmark as the cost floor.
#[xdp]
pub fn fwcluster_floor(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// The data path followed by turning an ARP reply back into the request it answered, so that
/// BPF_PROG_TEST_RUN with `repeat` measures the full rewrite path on every iteration. Loaded only
/// by the benchmark; its cost includes the restore, so it overstates the real path slightly.
#[xdp]
pub fn fwcluster_bench_arp(ctx: XdpContext) -> u32 {
    let action = run(&ctx);
    if action == XDP_TX {
        restore_request(&Frame::new(&ctx));
    }
    action
}

#[inline(always)]
fn restore_request(frame: &Frame) {
    let Some(eth) = frame.header::<EthHdr>(0) else {
        return;
    };
    let Ok((_, l3)) = frame.l3(eth) else {
        return;
    };
    let Some(arp) = frame.header::<ArpHdr>(l3) else {
        return;
    };
    // SAFETY: bounds-checked pointers into the frame.
    unsafe {
        let target = (*arp).spa;
        (*eth).src = (*eth).dst;
        (*eth).dst = [0xffff; 3];
        (*arp).oper = ARP_OP_REQUEST.to_be();
        (*arp).sha = (*arp).tha;
        (*arp).spa = (*arp).tpa;
        (*arp).tha = [0; 3];
        (*arp).tpa = target;
    }
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
        }
    }
}

#[inline(always)]
fn process(ctx: &XdpContext, frame: &Frame, counters: &mut Counters) -> u32 {
    let Some(eth) = frame.header::<EthHdr>(0) else {
        return malformed(ctx, counters, Malformed::ShortEthernet);
    };
    let (ethertype, l3) = match frame.l3(eth) {
        Ok(found) => found,
        Err(reason) => return malformed(ctx, counters, reason),
    };
    match ethertype {
        ETH_P_ARP => respond_arp(ctx, frame, eth, l3, counters),
        // Flow-share traffic is addressed to a multicast MAC; unicast frames skip the lookup.
        // SAFETY: `eth` was bounds-checked by `Frame::header`.
        ETH_P_IP if unsafe { (*eth).dst[0] } & 1 == 1 => filter_flow(ctx, frame, eth, l3, counters),
        _ => XDP_PASS,
    }
}

/// Whether this node may act for a lease slot right now.
#[derive(PartialEq, Eq)]
enum Ownership {
    Owned,
    NotOwned,
    Expired,
}

/// Whether this node owns the lease slot that `slot` names, by the precise clock on every frame.
/// A timer that confirmed the lease once and was to fence it at its end cannot be trusted with
/// that: its softirq runs late on a busy machine (seen here: an answer 20 ms past the lease,
/// beside the new owner). The coarse clock lags by up to a tick (4 ms at HZ=250).
///
/// `slot` is read where needed: a value kept across the lease's lookup (a call, to the compiler)
/// would be spilled to the stack on every frame.
#[inline(always)]
fn ownership(slot: &u32) -> Ownership {
    // SAFETY: a field of a map value.
    let Some(lease) = FWC_LEASES.get_ptr(unsafe { core::ptr::read_volatile(slot) }) else {
        return Ownership::NotOwned;
    };
    // SAFETY: bounds-checked map value. The controller rewrites its fields concurrently; each
    // field is one aligned word.
    let (owned, expires_ns) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*lease).owned),
            core::ptr::read_volatile(&raw const (*lease).expires_ns),
        )
    };
    if owned == 0 {
        return Ownership::NotOwned;
    }
    // SAFETY: a helper without arguments.
    if unsafe { bpf_ktime_get_ns() } >= expires_ns {
        return Ownership::Expired;
    }
    Ownership::Owned
}

#[inline(always)]
fn respond_arp(
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
        // A tagged request is looked up under its VLAN: an address of the interface itself is
        // not answered on the interface's VLANs.
        let ifindex = ctx.ingress_ifindex() as u32;
        let ifindex = if l3 == core::mem::size_of::<EthHdr>() {
            ifindex
        } else {
            match frame.header::<VlanHdr>(core::mem::size_of::<EthHdr>()) {
                Some(vlan) => vlan_key_ifindex(ifindex, u16::from_be((*vlan).tci)),
                None => return malformed(ctx, counters, Malformed::TruncatedVlan),
            }
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

#[inline(always)]
fn filter_flow(
    ctx: &XdpContext,
    frame: &Frame,
    eth: *mut EthHdr,
    l3: usize,
    counters: &mut Counters,
) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    let tables = &raw const FWC_FLOW_TABLES;
    // SAFETY: an index in bounds of the array (the modulo is a mask); the controller writes the
    // tables concurrently, which at worst mixes two settings for a frame.
    let share = unsafe { &(*tables).shares[(ifindex % MAX_FLOWSHARE_INTERFACES) as usize] };
    // SAFETY: `eth` is bounds-checked.
    if share.ifindex != ifindex || mac_words(share.mac) != unsafe { (*eth).dst } {
        return XDP_PASS;
    }
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
                // Not short-circuited: three compares are cheaper than three branches.
                let has_ports = (protocol == IPPROTO_TCP)
                    | (protocol == IPPROTO_UDP)
                    | (protocol == IPPROTO_SCTP);
                let (src_port, dst_port) = if has_ports && !fragmented {
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
        // The controller keeps `table` and `buckets` in range; were they not, the index is
        // still masked into the table and a frame at worst lands in a wrong bucket.
        let index = share.table.wrapping_mul(MAX_BUCKETS) + bucket_of(hash, share.buckets);
        // SAFETY: an index in bounds of the array (the modulo is a mask).
        let owner = unsafe { (*tables).buckets[(index % BUCKET_TABLE_SIZE) as usize].node };
        owner == share.node_id
    };
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

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "cluster-ebpf holds XDP programs for the kernel; cluster-ctl's build script builds it for bpfel-unknown-none"
    );
    std::process::exit(2);
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
