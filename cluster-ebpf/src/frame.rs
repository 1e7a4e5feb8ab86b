//! Bounds-checked access to the frame: the only place that turns packet offsets into pointers.
//!
//! Header structs are made of 16-bit words (and bytes): every field the program touches sits at
//! an even offset of an Ethernet frame, with or without one VLAN tag, and XDP frames start at
//! least 2-byte aligned, so the JIT copies MACs and addresses in 2-byte moves instead of bytes.
//! Words hold the wire bytes unchanged: numbers are decoded with `u16::from_be`, addresses are
//! compared raw (the maps store them in network order, see [`Ipv4Words`]).

use aya_ebpf::programs::XdpContext;

use crate::Malformed;

pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// A MAC address as three wire-order words.
pub type MacWords = [u16; 3];
/// An IPv4 address as two wire-order words.
pub type Ipv4Words = [u16; 2];

/// The address as the maps store it (`u32::from_ne_bytes(octets)`).
#[inline(always)]
pub fn ipv4_raw(words: Ipv4Words) -> u32 {
    // SAFETY: same size, any bit pattern is a valid u32.
    unsafe { core::mem::transmute::<Ipv4Words, u32>(words) }
}

/// An IPv6 address as four raw words (`u32::from_ne_bytes` of each four octets), as the flow
/// hash folds it.
#[inline(always)]
pub fn ipv6_raw(words: Ipv6Words) -> [u32; 4] {
    // SAFETY: same size, any bit pattern is a valid [u32; 4].
    unsafe { core::mem::transmute::<Ipv6Words, [u32; 4]>(words) }
}

/// A MAC stored as bytes in a map value, as words.
#[inline(always)]
pub fn mac_words(mac: [u8; 6]) -> MacWords {
    // SAFETY: same size, any bit pattern is valid.
    unsafe { core::mem::transmute::<[u8; 6], MacWords>(mac) }
}

#[repr(C)]
pub struct EthHdr {
    pub dst: MacWords,
    pub src: MacWords,
    pub ethertype: u16,
}

#[repr(C)]
pub struct VlanHdr {
    pub tci: u16,
    pub ethertype: u16,
}

#[repr(C)]
pub struct ArpHdr {
    pub htype: u16,
    pub ptype: u16,
    pub hlen: u8,
    pub plen: u8,
    pub oper: u16,
    pub sha: MacWords,
    pub spa: Ipv4Words,
    pub tha: MacWords,
    pub tpa: Ipv4Words,
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub total_len: u16,
    pub id: u16,
    pub flags_fragment: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub checksum: u16,
    pub src: Ipv4Words,
    pub dst: Ipv4Words,
}

/// An IPv6 address as eight wire-order words.
pub type Ipv6Words = [u16; 8];

#[repr(C)]
pub struct Ipv6Hdr {
    /// Version, traffic class and flow label.
    pub version_class_flow: [u16; 2],
    pub payload_len: u16,
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: Ipv6Words,
    pub dst: Ipv6Words,
}

/// A Neighbor Solicitation or Advertisement (RFC 4861 4.3, 4.4), options apart.
#[repr(C)]
pub struct NeighborMessage {
    pub kind: u8,
    pub code: u8,
    pub checksum: u16,
    /// The advertisement's R, S and O flags in the first byte; reserved otherwise.
    pub flags_reserved: [u16; 2],
    pub target: Ipv6Words,
}

/// A link-layer address option of Neighbor Discovery (RFC 4861 4.6.1) for Ethernet.
#[repr(C)]
pub struct LinkLayerOption {
    pub kind: u8,
    /// In units of 8 octets: 1.
    pub len: u8,
    pub mac: MacWords,
}

/// The first four bytes of TCP, UDP and SCTP headers.
#[repr(C)]
pub struct L4Ports {
    pub src: u16,
    pub dst: u16,
}

pub struct Frame {
    start: usize,
    end: usize,
}

impl Frame {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// A pointer to a `T` at `offset`, or `None` when the frame is too short to hold it.
    #[inline(always)]
    pub fn header<T>(&self, offset: usize) -> Option<*mut T> {
        let start = self.start + offset;
        if start + core::mem::size_of::<T>() > self.end {
            return None;
        }
        Some(start as *mut T)
    }

    /// The ethertype behind at most one VLAN tag and the offset of the layer-3 header.
    ///
    /// # Safety
    /// `eth` must come from `self.header::<EthHdr>(0)` (the caller has it already; fetching it
    /// again would cost the hot path a second bounds check).
    #[inline(always)]
    pub unsafe fn l3(&self, eth: *const EthHdr) -> Result<(u16, usize), Malformed> {
        // SAFETY: the caller got `eth` from `header`.
        let ethertype = u16::from_be(unsafe { (*eth).ethertype });
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            return Ok((ethertype, core::mem::size_of::<EthHdr>()));
        }
        let vlan: *const VlanHdr = self
            .header(core::mem::size_of::<EthHdr>())
            .ok_or(Malformed::TruncatedVlan)?;
        // SAFETY: bounds-checked above.
        let inner = u16::from_be(unsafe { (*vlan).ethertype });
        Ok((
            inner,
            core::mem::size_of::<EthHdr>() + core::mem::size_of::<VlanHdr>(),
        ))
    }
}
