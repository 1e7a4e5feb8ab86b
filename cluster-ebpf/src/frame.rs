//! Bounds-checked access to the frame: the only place that turns packet offsets into pointers.
//!
//! Header structs hold byte arrays only (alignment 1), so a pointer anywhere in the frame is
//! valid for them, and multi-byte fields are decoded explicitly with `from_be_bytes` or kept raw
//! with `from_ne_bytes` (addresses, which the maps store in network order).

use aya_ebpf::programs::XdpContext;

use crate::Malformed;

const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: [u8; 2],
}

#[repr(C)]
pub struct VlanHdr {
    pub tci: [u8; 2],
    pub ethertype: [u8; 2],
}

#[repr(C)]
pub struct ArpHdr {
    pub htype: [u8; 2],
    pub ptype: [u8; 2],
    pub hlen: u8,
    pub plen: u8,
    pub oper: [u8; 2],
    pub sha: [u8; 6],
    pub spa: [u8; 4],
    pub tha: [u8; 6],
    pub tpa: [u8; 4],
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub total_len: [u8; 2],
    pub id: [u8; 2],
    pub flags_fragment: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub checksum: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

/// The first four bytes of TCP, UDP and SCTP headers.
#[repr(C)]
pub struct L4Ports {
    pub src: [u8; 2],
    pub dst: [u8; 2],
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
    #[inline(always)]
    pub fn l3(&self, eth: *const EthHdr) -> Result<(u16, usize), Malformed> {
        // SAFETY: the caller got `eth` from `header`.
        let ethertype = u16::from_be_bytes(unsafe { (*eth).ethertype });
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            return Ok((ethertype, core::mem::size_of::<EthHdr>()));
        }
        let vlan: *const VlanHdr = self
            .header(core::mem::size_of::<EthHdr>())
            .ok_or(Malformed("truncated VLAN tag"))?;
        // SAFETY: bounds-checked above.
        let inner = u16::from_be_bytes(unsafe { (*vlan).ethertype });
        Ok((
            inner,
            core::mem::size_of::<EthHdr>() + core::mem::size_of::<VlanHdr>(),
        ))
    }
}
