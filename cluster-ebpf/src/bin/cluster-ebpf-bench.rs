//! The benchmark's XDP object (`fwcluster-bench` embeds it; the controller never sees it): a
//! traffic generator, a sink, a trivial floor and the ARP and Neighbor Discovery paths with an
//! undo for repeated runs.
//! Loaded against a node's pinned maps, so that it measures the product's code on the
//! product's maps.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::generated::bpf_get_prandom_u32,
    macros::xdp,
    programs::XdpContext,
};

use cluster_ebpf::{
    arp::{ARP_OP_REPLY, ARP_OP_REQUEST},
    frame::{
        ArpHdr, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, EthHdr, Frame, Ipv4Hdr, Ipv6Hdr, LinkLayerOption,
        NeighborMessage,
    },
    maps::FWC_COUNTERS,
    ndp::{IPPROTO_ICMPV6, ND_NEIGHBOR_ADVERT, ND_NEIGHBOR_SOLICIT},
    run,
};

/// The benchmark's traffic generator, run by BPF_PROG_TEST_RUN in live-frames mode on the
/// generator's interface: sends every frame out (`XDP_TX` becomes a transmit there). Live frames
/// are recycled with whatever the receiver wrote into them, so the generator first undoes what a
/// responder does: an ARP reply is turned back into its request, a Neighbor Advertisement into
/// its solicitation (its checksum as the advertisement left it: only the XDP responders rewrite
/// frames in place, and they do not verify it), and an IPv4 frame is addressed
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
            // A solicitation its responder turned into an advertisement in place.
            ETH_P_IPV6 => {
                if let Some(ip) = frame.header::<Ipv6Hdr>(l3)
                    && (*ip).next_header == IPPROTO_ICMPV6
                    && let Some(kind) =
                        frame.header::<[u8; 2]>(l3 + core::mem::size_of::<Ipv6Hdr>())
                    && (*kind)[0] == ND_NEIGHBOR_ADVERT
                {
                    restore_solicitation(&frame);
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

/// The data path followed by turning its Neighbor Advertisement back into the multicast
/// solicitation it answered (with its source link-layer option, so the frame keeps its
/// length), like [`fwcluster_bench_arp`]. The restored solicitation's checksum is not
/// recomputed: the data path does not verify it (the kernel does, for what it passes).
#[xdp]
pub fn fwcluster_bench_ns(ctx: XdpContext) -> u32 {
    let action = run(&ctx);
    if action == XDP_TX {
        restore_solicitation(&Frame::new(&ctx));
    }
    action
}

#[inline(always)]
fn restore_solicitation(frame: &Frame) {
    let Some(eth) = frame.header::<EthHdr>(0) else {
        return;
    };
    // SAFETY: `eth` is the frame's bounds-checked Ethernet header.
    let Ok((_, l3)) = (unsafe { frame.l3(eth) }) else {
        return;
    };
    let at = l3 + core::mem::size_of::<Ipv6Hdr>();
    let (Some(ip), Some(na), Some(option)) = (
        frame.header::<Ipv6Hdr>(l3),
        frame.header::<NeighborMessage>(at),
        frame.header::<LinkLayerOption>(at + core::mem::size_of::<NeighborMessage>()),
    ) else {
        return;
    };
    // SAFETY: bounds-checked pointers into the frame.
    unsafe {
        let target = (*na).target;
        let requester = (*eth).dst;
        // ff02::1:ffXX:XXXX and 33:33:ff:XX:XX:XX from the target's last 24 bits.
        let low = u16::from_be(target[6]) & 0x00ff;
        let solicited_node = [
            u16::from_ne_bytes([0xff, 0x02]),
            0,
            0,
            0,
            0,
            1u16.to_be(),
            (0xff00 | low).to_be(),
            target[7],
        ];
        (*eth).src = requester;
        (*eth).dst = [
            u16::from_ne_bytes([0x33, 0x33]),
            (0xff00 | low).to_be(),
            target[7],
        ];
        (*ip).src = (*ip).dst;
        (*ip).dst = solicited_node;
        (*na).kind = ND_NEIGHBOR_SOLICIT;
        (*na).flags_reserved = [0, 0];
        (*option).kind = 1;
        (*option).mac = requester;
    }
}

#[inline(always)]
fn restore_request(frame: &Frame) {
    let Some(eth) = frame.header::<EthHdr>(0) else {
        return;
    };
    // SAFETY: `eth` is the frame's bounds-checked Ethernet header.
    let Ok((_, l3)) = (unsafe { frame.l3(eth) }) else {
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

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "cluster-ebpf-bench holds the benchmark's XDP programs; cluster-ctl's build script builds it for bpfel-unknown-none"
    );
    std::process::exit(2);
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
