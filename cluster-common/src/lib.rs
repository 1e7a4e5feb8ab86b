//! The ABI between fwcluster's XDP programs and its controller.
//!
//! Every type here is `#[repr(C)]` with explicit padding so that the kernel side (built for
//! `bpfel-unknown-none`) and the user side agree byte for byte, and so that the BTF emitted for
//! the maps names every field (`bpftool map dump pinned …` shows them). Addresses are kept in
//! network byte order exactly as they appear on the wire (`u32::from_ne_bytes(octets)`), so the
//! XDP program never swaps bytes on the hot path.
//!
//! The user side enables the `user` feature to get `aya::Pod` implementations.
#![no_std]

pub mod flowhash;

/// Size of the per-address hit counters (R-RES-1 asks for at least 65,536 addresses; the rest is
/// headroom for shared addresses).
pub const MAX_ADDRESSES: u32 = 131_072;
/// Buckets of one half of the address table ([`AddressBucket`], two slots each). The controller
/// fills at most half of the slots, where cuckoo hashing with two candidate buckets always finds
/// a place; a lookup reads at most two buckets.
pub const ADDRESS_BUCKETS: u32 = 65_536;
/// The address table holds two halves: the program reads the one [`NodeConfig::address_half`]
/// names while the controller writes the other, then flips (no reader sees a half-written
/// entry, and a new address set replaces the old one at once).
pub const ADDRESS_TABLE_BUCKETS: u32 = 2 * ADDRESS_BUCKETS;
/// Addresses the table takes: half its slots.
pub const ADDRESS_TABLE_CAPACITY: usize = ADDRESS_BUCKETS as usize;
/// Buckets of one half of the IPv6 address table ([`Address6Bucket`]), laid out and flipped as
/// the IPv4 one (the same [`NodeConfig::address_half`] names the half in use of both).
pub const ADDRESS6_BUCKETS: u32 = 8_192;
/// Both halves of the IPv6 address table.
pub const ADDRESS6_TABLE_BUCKETS: u32 = 2 * ADDRESS6_BUCKETS;
/// IPv6 addresses the table takes: half its slots.
pub const ADDRESS6_TABLE_CAPACITY: usize = ADDRESS6_BUCKETS as usize;
/// Maximum number of ownership slots (groups and flow-share instances together).
pub const MAX_LEASES: u32 = 1024;
/// Maximum number of flow-share instances per node.
pub const MAX_FLOWSHARES: u32 = 16;
/// Maximum number of buckets of one flow-share instance.
pub const MAX_BUCKETS: u32 = 4096;
/// Size of the bucket table: one region of [`MAX_BUCKETS`] entries per flow-share instance.
pub const BUCKET_TABLE_SIZE: u32 = MAX_FLOWSHARES * MAX_BUCKETS;
/// Bucket owner value meaning "no node owns this bucket" (traffic in it is dropped everywhere).
pub const NO_OWNER: u32 = u32::MAX;

/// Names of the maps as declared in the eBPF object (and of their pins). The kernel keeps 15
/// characters of a map name, so they stay short.
pub mod map_name {
    /// `half * ADDRESS_BUCKETS + bucket` → [`crate::AddressBucket`] (memory-mapped by the
    /// controller; see [`crate::address_buckets`]).
    pub const ADDRESSES: &str = "FWC_ADDRESSES";
    /// lease slot (`u32`) → [`crate::Lease`]; epoch 0 means never granted.
    pub const LEASES: &str = "FWC_LEASES";
    /// Single entry: [`crate::FlowShareTables`], every interface's flow-share settings and
    /// every bucket's owner (memory-mapped by the controller, read by the program in place).
    pub const FLOW: &str = "FWC_FLOW";
    /// Single entry: [`crate::NodeConfig`].
    pub const NODE: &str = "FWC_NODE";
    /// Single per-CPU entry: [`crate::Counters`].
    pub const COUNTERS: &str = "FWC_COUNTERS";
    /// [`crate::AddressEntry::hit_slot`] → per-CPU [`crate::AddressHits`].
    pub const ADDRESS_HITS: &str = "FWC_ADDR_HITS";
    /// `half * ADDRESS6_BUCKETS + bucket` → [`crate::Address6Bucket`] (memory-mapped by the
    /// controller), the IPv6 addresses answered with Neighbor Advertisements.
    pub const ADDRESSES6: &str = "FWC_ADDR6";
    /// Every map, in pin order.
    pub const ALL: [&str; 7] = [
        ADDRESSES,
        LEASES,
        FLOW,
        NODE,
        COUNTERS,
        ADDRESS_HITS,
        ADDRESSES6,
    ];
}

/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "fwcluster_xdp";

/// The `ifindex` of an [`AddressKey`] for an address answered on VLAN `vid` (1..=4095) of the
/// interface `ifindex` (at most 2^19): requests that arrive with an 802.1Q tag are looked up
/// under it, so an address keyed on the interface itself (untagged) is never answered on one of
/// its VLANs, which are other networks. VID 0 (priority tag only) is the untagged network.
pub const fn vlan_key_ifindex(ifindex: u32, vid: u16) -> u32 {
    if vid & 0x0fff == 0 {
        ifindex
    } else {
        0x8000_0000 | ((ifindex & 0x7_ffff) << 12) | (vid as u32 & 0x0fff)
    }
}

/// Key of an address the cluster answers for: the interface it is answered on (for a VLAN of
/// it, see [`vlan_key_ifindex`]) and the IPv4 address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressKey {
    /// Interface index the address is answered on.
    pub ifindex: u32,
    /// IPv4 address in network byte order.
    pub addr: u32,
}

/// What kind of cluster address an [`AddressEntry`] is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressKind {
    /// Floating IP: also configured on the interface of the owner.
    Fip = 1,
    /// Proxy-ARP address (static NAT): answered only, never configured on an interface.
    Parp = 2,
    /// Flow-share address: answered by every live node with the shared (multicast) MAC.
    Shared = 3,
}

impl AddressKind {
    /// Decodes the kind stored in a map value.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Fip),
            2 => Some(Self::Parp),
            3 => Some(Self::Shared),
            _ => None,
        }
    }
}

/// One slot of the address table; `key.ifindex == 0` marks it empty (no interface has index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressSlot {
    pub key: AddressKey,
    pub entry: AddressEntry,
}

/// A bucket of the address table: one cache line.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressBucket {
    pub slots: [AddressSlot; 2],
}

impl AddressKey {
    /// The key as one word, as the table compares it.
    #[inline(always)]
    pub const fn word(&self) -> u64 {
        ((self.addr as u64) << 32) | self.ifindex as u64
    }
}

/// Key of an IPv6 address the cluster answers for (see [`AddressKey`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressKey6 {
    /// Interface index the address is answered on (for a VLAN of it, see
    /// [`vlan_key_ifindex`]); 0 marks an empty slot.
    pub ifindex: u32,
    pub _pad: u32,
    /// The address as four words in wire order (`u32::from_ne_bytes` of each 4 octets).
    pub addr: [u32; 4],
}

impl AddressKey6 {
    /// The key of `octets` on `ifindex`.
    pub const fn new(ifindex: u32, octets: [u8; 16]) -> Self {
        const fn word(octets: &[u8; 16], i: usize) -> u32 {
            u32::from_ne_bytes([octets[i], octets[i + 1], octets[i + 2], octets[i + 3]])
        }
        Self {
            ifindex,
            _pad: 0,
            addr: [
                word(&octets, 0),
                word(&octets, 4),
                word(&octets, 8),
                word(&octets, 12),
            ],
        }
    }

    /// The address's octets.
    pub const fn octets(&self) -> [u8; 16] {
        let [a, b, c, d] = self.addr;
        let (a, b, c, d) = (
            a.to_ne_bytes(),
            b.to_ne_bytes(),
            c.to_ne_bytes(),
            d.to_ne_bytes(),
        );
        [
            a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1],
            d[2], d[3],
        ]
    }

    /// The key folded into one word, to choose its buckets ([`address6_buckets`]): the
    /// prefix half scrambled by an odd multiplier (a bijection), then the interface identifier
    /// half and the interface, likewise scrambled, xored in. Addresses that differ in one half
    /// only (a prefix's hosts, one host's prefixes) never fold alike; others rarely do.
    #[inline(always)]
    pub const fn fold(&self) -> u64 {
        let [a, b, c, d] = self.addr;
        let prefix = ((a as u64) << 32) | b as u64;
        let host = ((c as u64) << 32) | d as u64;
        prefix.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ host
            ^ (self.ifindex as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
    }
}

/// One slot of the IPv6 address table; `key.ifindex == 0` marks it empty.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address6Slot {
    pub key: AddressKey6,
    pub entry: AddressEntry,
}

/// A bucket of the IPv6 address table.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address6Bucket {
    pub slots: [Address6Slot; 2],
}

/// The two candidate buckets (within a half of the IPv6 table) of a folded key.
#[inline(always)]
pub const fn address6_buckets(folded: u64) -> (u32, u32) {
    let (first, second) = address_buckets(folded);
    let first = first & (ADDRESS6_BUCKETS - 1);
    let second = second & (ADDRESS6_BUCKETS - 1);
    (first, if second == first { first ^ 1 } else { second })
}

/// The two candidate buckets (within a half) of an address: distinct, from the top and the
/// middle bits of one SplitMix64 finalizer over the key.
#[inline(always)]
pub const fn address_buckets(key_word: u64) -> (u32, u32) {
    let mut h = key_word ^ 0x2545_f491_4f6c_dd1d;
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    let first = (h >> 48) as u32 & (ADDRESS_BUCKETS - 1);
    let second = (h >> 16) as u32 & (ADDRESS_BUCKETS - 1);
    (first, if second == first { first ^ 1 } else { second })
}

/// Value for an owned (or ownable) cluster address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressEntry {
    /// Lease slot whose [`Lease`] decides whether this node answers.
    pub lease: u32,
    /// Index into the per-address hit counters.
    pub hit_slot: u32,
    /// MAC address put into ARP replies (the sender hardware address).
    pub mac: [u8; 6],
    /// [`AddressKind`] as `u8`.
    pub kind: u8,
    /// [`ENTRY_ROUTER`]: an IPv6 address that is a gateway (Neighbor Advertisements carry the
    /// Router flag).
    pub flags: u8,
    /// Ethernet source of the replies: `mac` for FIP and PARP; the interface's own MAC for a
    /// shared address, whose multicast MAC may not be a frame's source (bridges drop those).
    pub eth_source: [u8; 6],
    pub _pad2: [u8; 2],
}

impl AddressEntry {
    /// The entry of an address of `kind` under lease slot `lease`, answered with `mac` from
    /// the Ethernet source `eth_source`.
    pub const fn new(
        lease: u32,
        hit_slot: u32,
        kind: AddressKind,
        mac: [u8; 6],
        eth_source: [u8; 6],
    ) -> Self {
        Self {
            lease,
            hit_slot,
            mac,
            kind: kind as u8,
            flags: 0,
            eth_source,
            _pad2: [0; 2],
        }
    }
}

/// [`AddressEntry::flags`]: the address is a router's (IPv6 gateway).
pub const ENTRY_ROUTER: u8 = 1;

impl AddressEntry {
    /// The same entry, answered as a router's address (or not).
    pub const fn router(mut self, router: bool) -> Self {
        self.flags = if router { ENTRY_ROUTER } else { 0 };
        self
    }
}

/// Ownership of a group (or of a flow-share instance) on this node.
///
/// The XDP program answers for the addresses of a lease slot only while `owned != 0` and its
/// precise clock (CLOCK_MONOTONIC, read on every frame) is before `expires_ns`; the controller
/// renews `expires_ns` every heartbeat interval. A controller that dies therefore falls silent
/// within the lease time (self-fencing). `epoch` increases on every ownership change so that a
/// stale controller cannot renew a slot that has since moved on.
///
/// The map is memory-mapped: the controller writes `epoch`, `expires_ns` and `owned` with one
/// store each (a renewal is one store); a packet reads them from one element.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Ownership epoch this lease was granted under.
    pub epoch: u64,
    /// CLOCK_MONOTONIC time (ns) at which the lease expires.
    pub expires_ns: u64,
    /// 1 when this node owns the slot, 0 when the slot is known but released.
    pub owned: u32,
    pub _pad: u32,
}

/// Why the data path refuses a lease operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseRefusal {
    /// A grant must name an epoch above the slot's.
    EpochNotIncreasing { requested: u64, current: u64 },
    /// A renewal must name the slot's own epoch: the group has moved on.
    StaleEpoch { requested: u64, current: u64 },
    /// The slot is released, or was never granted.
    NotOwned,
    /// The lease ran out; only a new grant revives it.
    Expired,
}

/// The one lease model (R-XDP-4): what the data path does with each lease operation. The
/// controller's data path writes what these return; the simulator applies the same functions
/// to its model of the maps. `current` is `None` for a slot never granted.
impl Lease {
    /// Whether the data path acts for this lease at `now_ns` (CLOCK_MONOTONIC): the rule the
    /// XDP program applies to every frame.
    pub const fn answers(&self, now_ns: u64) -> bool {
        self.owned != 0 && now_ns < self.expires_ns
    }

    /// Ownership under a new epoch, above the slot's, until `until`.
    pub fn granted(current: Option<Self>, epoch: u64, until: u64) -> Result<Self, LeaseRefusal> {
        if let Some(current) = current
            && epoch <= current.epoch
        {
            return Err(LeaseRefusal::EpochNotIncreasing {
                requested: epoch,
                current: current.epoch,
            });
        }
        Ok(Self {
            epoch,
            expires_ns: until,
            owned: 1,
            _pad: 0,
        })
    }

    /// The owned lease of `epoch` moved to end at `until`. A lease that ran out may be moved
    /// again: the engine resumes one only on fresh acknowledgements of its heartbeats
    /// (R-SPLIT-1), which prove that no peer took the group meanwhile. A released slot stays
    /// released.
    pub fn extended(current: Option<Self>, epoch: u64, until: u64) -> Result<Self, LeaseRefusal> {
        let current = current.ok_or(LeaseRefusal::NotOwned)?;
        if current.epoch != epoch {
            return Err(LeaseRefusal::StaleEpoch {
                requested: epoch,
                current: current.epoch,
            });
        }
        if current.owned == 0 {
            return Err(LeaseRefusal::NotOwned);
        }
        Ok(Self {
            expires_ns: until,
            ..current
        })
    }

    /// As [`Lease::extended`], but a lease that ran out by `now_ns` stays dead (a renewal
    /// without the engine's proof: the peer may have taken over meanwhile).
    pub fn renewed(
        current: Option<Self>,
        epoch: u64,
        until: u64,
        now_ns: u64,
    ) -> Result<Self, LeaseRefusal> {
        let extended = Self::extended(current, epoch, until)?;
        match current {
            Some(current) if current.expires_ns <= now_ns => Err(LeaseRefusal::Expired),
            _ => Ok(extended),
        }
    }

    /// The slot given up. Never refused, also under an epoch older than the slot's (changed
    /// behind the controller's back): the higher epoch is kept so that older renewals stay
    /// refused.
    pub fn released(current: Option<Self>, epoch: u64) -> Self {
        Self {
            epoch: epoch.max(current.map_or(0, |c| c.epoch)),
            expires_ns: 0,
            owned: 0,
            _pad: 0,
        }
    }
}

/// Hash modes of flow share (R-XDP-2).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashMode {
    /// Source IPv4 address only.
    Src = 0,
    /// Source and destination address, symmetric (both directions hash alike).
    SrcDst = 1,
    /// Protocol, addresses and ports, symmetric; fragments fall back to addresses + protocol.
    FiveTuple = 2,
}

impl HashMode {
    /// Decodes the mode stored in a map value.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::Src),
            1 => Some(Self::SrcDst),
            2 => Some(Self::FiveTuple),
            _ => None,
        }
    }
}

/// Configuration of flow share on one interface: frames arriving there addressed to `mac` are
/// flow-shared. Matching on the MAC (not the IP) covers both traffic to the shared address and
/// traffic routed through it as a gateway.
///
/// Stored in [`FlowShareTables::shares`] at index `ifindex % MAX_FLOWSHARE_INTERFACES` (one
/// instance per interface; the controller refuses two interfaces that collide), so the hot path
/// finds it by one indexed load.
/// Several interfaces (e.g. the outside and inside of a shared gateway) may name the same `table`
/// and `seed`, so both directions of a flow land on one node in the symmetric modes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowShare {
    /// Interface this entry is for (0: unused slot).
    pub ifindex: u32,
    /// Lease slot: while it is not owned and fresh, all flow-shared traffic is dropped.
    pub lease: u32,
    /// Region of the bucket table (`table * MAX_BUCKETS`).
    pub table: u32,
    /// Number of buckets in use (1..=MAX_BUCKETS).
    pub buckets: u32,
    /// Hash seed, identical on every node.
    pub seed: u32,
    /// The shared (multicast) MAC.
    pub mac: [u8; 6],
    /// The receiving interface's own MAC. Passed frames get it as destination, so the kernel
    /// treats them as addressed to this host (it neither forwards nor delivers TCP for frames
    /// that arrived with a multicast destination).
    pub local_mac: [u8; 6],
    /// [`HashMode`] as `u8`.
    pub hash_mode: u8,
    pub _pad: [u8; 3],
    /// This node's id, as in [`NodeConfig`] (the controller fills it in): a bucket whose owner
    /// it is passes. Kept here so that a frame needs no lookup of the node's settings.
    pub node_id: u32,
}

/// Size of the flow-share array (interfaces are placed at `ifindex % this`).
pub const MAX_FLOWSHARE_INTERFACES: u32 = 256;

/// Everything flow share reads per frame, as one value: each interface's settings at
/// `ifindex % MAX_FLOWSHARE_INTERFACES`, and the bucket owners, one region of [`MAX_BUCKETS`] per
/// flow-share instance (`FlowShare::table`).
///
/// The map (`map_name::FLOW`) has a single entry, so that the program addresses it as a global
/// variable ([`FLOW_TABLES_SYMBOL`] in section [`FLOW_TABLES_SECTION`], which the loader binds to
/// the same map) instead of through a map lookup. A lookup is a helper call to the compiler,
/// which then spills and reloads every value live across it; the two lookups per frame this
/// saves cost 1–2 ns of the 10 the flow path may take.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FlowShareTables {
    pub shares: [FlowShare; MAX_FLOWSHARE_INTERFACES as usize],
    pub buckets: [BucketOwner; BUCKET_TABLE_SIZE as usize],
}

// The program masks indexes into the tables with these moduli.
const _: () =
    assert!(MAX_FLOWSHARE_INTERFACES.is_power_of_two() && BUCKET_TABLE_SIZE.is_power_of_two());

/// The ELF section of the program's view of [`map_name::FLOW`] (a `.bss` section: the loader
/// makes it a single-entry array map, and binds it to the pinned map).
pub const FLOW_TABLES_SECTION: &str = ".bss.fwc_flow";
/// The program's global variable in [`FLOW_TABLES_SECTION`].
pub const FLOW_TABLES_SYMBOL: &str = "FWC_FLOW_TABLES";

/// Owner of one flow-share bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketOwner {
    /// Node id of the owner, or [`NO_OWNER`].
    pub node: u32,
}

/// Per-node settings of the data path.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's id (its position in the configuration's server list).
    pub node_id: u32,
    /// Which half of the address table is in use (0 or 1).
    pub address_half: u32,
    /// [`ABI_VERSION`] of the controller that last opened these maps (0: never opened).
    pub abi_version: u32,
}

/// Version of the maps' layouts and meanings, shared by the program and the controller. Raised
/// with every change to either, so that a controller refuses, by name, pins that a build with
/// other layouts left behind instead of adopting them (a layout change that keeps every size
/// would otherwise go unnoticed).
pub const ABI_VERSION: u32 = 5;

/// Per-CPU counters of the data path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames seen by the program.
    pub packets: u64,
    /// ARP requests seen (any target).
    pub arp_requests: u64,
    /// ARP replies sent for owned addresses.
    pub arp_replies: u64,
    /// ARP requests for cluster addresses this node does not own (dropped).
    pub arp_not_owned: u64,
    /// ARP requests for owned addresses whose lease expired (dropped).
    pub arp_lease_expired: u64,
    /// Truncated or malformed frames (passed untouched).
    pub malformed: u64,
    /// Flow-share frames in this node's buckets (passed).
    pub flow_passed: u64,
    /// Flow-share frames in other nodes' buckets or with an expired lease (dropped).
    pub flow_dropped: u64,
    /// Neighbor Solicitations seen (any target).
    pub ns_requests: u64,
    /// Neighbor Advertisements sent for owned addresses.
    pub na_sent: u64,
    /// Neighbor Solicitations for cluster addresses this node does not own (dropped).
    pub ns_not_owned: u64,
    /// Neighbor Solicitations for owned addresses whose lease expired (dropped).
    pub ns_lease_expired: u64,
}

impl Counters {
    /// Every counter with its name (as `clpstat --json` and the metrics name them).
    pub const fn named(&self) -> [(&'static str, u64); 12] {
        [
            ("packets", self.packets),
            ("arp_requests", self.arp_requests),
            ("arp_replies", self.arp_replies),
            ("arp_not_owned", self.arp_not_owned),
            ("arp_lease_expired", self.arp_lease_expired),
            ("malformed", self.malformed),
            ("flow_passed", self.flow_passed),
            ("flow_dropped", self.flow_dropped),
            ("ns_requests", self.ns_requests),
            ("na_sent", self.na_sent),
            ("ns_not_owned", self.ns_not_owned),
            ("ns_lease_expired", self.ns_lease_expired),
        ]
    }

    /// Adds another CPU's counters.
    pub fn add(&mut self, other: &Self) {
        self.packets += other.packets;
        self.arp_requests += other.arp_requests;
        self.arp_replies += other.arp_replies;
        self.arp_not_owned += other.arp_not_owned;
        self.arp_lease_expired += other.arp_lease_expired;
        self.malformed += other.malformed;
        self.flow_passed += other.flow_passed;
        self.flow_dropped += other.flow_dropped;
        self.ns_requests += other.ns_requests;
        self.na_sent += other.na_sent;
        self.ns_not_owned += other.ns_not_owned;
        self.ns_lease_expired += other.ns_lease_expired;
    }
}

/// Per-address, per-CPU hit counter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressHits {
    /// ARP replies or Neighbor Advertisements sent for this address.
    pub replies: u64,
}

// SAFETY (every impl of this module): these types are #[repr(C)], contain only integers and byte
// arrays, and have no implicit padding (padding is spelled out as `_pad` fields), so any byte
// pattern is a valid value.
#[cfg(feature = "user")]
#[expect(
    clippy::undocumented_unsafe_blocks,
    reason = "one SAFETY comment above covers every Pod impl"
)]
mod pod {
    use super::*;
    unsafe impl aya::Pod for AddressKey {}
    unsafe impl aya::Pod for AddressEntry {}
    unsafe impl aya::Pod for AddressSlot {}
    unsafe impl aya::Pod for AddressBucket {}
    unsafe impl aya::Pod for AddressKey6 {}
    unsafe impl aya::Pod for Address6Slot {}
    unsafe impl aya::Pod for Address6Bucket {}
    unsafe impl aya::Pod for Lease {}
    unsafe impl aya::Pod for FlowShare {}
    unsafe impl aya::Pod for BucketOwner {}
    unsafe impl aya::Pod for FlowShareTables {}
    unsafe impl aya::Pod for NodeConfig {}
    unsafe impl aya::Pod for Counters {}
    unsafe impl aya::Pod for AddressHits {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn the_lease_model_refuses_what_the_data_path_refuses() {
        let granted = Lease::granted(None, 5, 1_000).unwrap();
        assert!(granted.answers(999) && !granted.answers(1_000));
        assert_eq!(
            Lease::granted(Some(granted), 5, 2_000),
            Err(LeaseRefusal::EpochNotIncreasing {
                requested: 5,
                current: 5
            })
        );
        assert_eq!(
            Lease::extended(Some(granted), 4, 2_000),
            Err(LeaseRefusal::StaleEpoch {
                requested: 4,
                current: 5
            })
        );
        // A lapsed lease may be moved by the engine, not renewed blindly.
        let moved = Lease::extended(Some(granted), 5, 3_000).unwrap();
        assert!(moved.answers(2_500) && moved.epoch == 5);
        assert_eq!(
            Lease::renewed(Some(granted), 5, 3_000, 1_000),
            Err(LeaseRefusal::Expired)
        );
        assert!(Lease::renewed(Some(granted), 5, 3_000, 999).is_ok());
        // Release: never refused, keeps the higher epoch, and stays released.
        let released = Lease::released(Some(granted), 3);
        assert!(released.epoch == 5 && !released.answers(0));
        assert_eq!(
            Lease::extended(Some(released), 5, 9_000),
            Err(LeaseRefusal::NotOwned)
        );
        assert_eq!(Lease::extended(None, 1, 9_000), Err(LeaseRefusal::NotOwned));
        assert!(
            Lease::granted(Some(released), 6, 9_000)
                .unwrap()
                .answers(8_999)
        );
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<AddressKey>(), 8);
        assert_eq!(size_of::<AddressEntry>(), 24);
        assert_eq!(size_of::<Lease>(), 24);
        assert_eq!(size_of::<FlowShare>(), 40);
        assert_eq!(size_of::<BucketOwner>(), 4);
        assert_eq!(
            size_of::<FlowShareTables>(),
            40 * MAX_FLOWSHARE_INTERFACES as usize + 4 * BUCKET_TABLE_SIZE as usize
        );
        assert_eq!(size_of::<NodeConfig>(), 12);
        assert_eq!(size_of::<AddressSlot>(), 32);
        assert_eq!(size_of::<AddressBucket>(), 64);
        assert_eq!(size_of::<Counters>(), 96);
        assert_eq!(size_of::<AddressKey6>(), 24);
        assert_eq!(size_of::<Address6Slot>(), 48);
        assert_eq!(size_of::<Address6Bucket>(), 96);
    }

    #[test]
    fn an_ipv6_key_keeps_its_octets_and_chooses_two_buckets_of_its_table() {
        let octets = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let key = AddressKey6::new(7, octets);
        assert_eq!(key.octets(), octets);
        // Wire order: the first word holds the first four octets as they are.
        assert_eq!(key.addr[0].to_ne_bytes(), [0x20, 0x01, 0x0d, 0xb8]);
        for n in 0..1000u16 {
            let mut octets = octets;
            octets[14..].copy_from_slice(&n.to_be_bytes());
            let (a, b) = address6_buckets(AddressKey6::new(7, octets).fold());
            assert!(a != b && a < ADDRESS6_BUCKETS && b < ADDRESS6_BUCKETS);
        }
    }

    #[test]
    fn map_names_fit_the_kernel_limit() {
        for name in map_name::ALL {
            assert!(
                name.len() <= 15,
                "{name} is longer than BPF_OBJ_NAME_LEN - 1"
            );
        }
    }
}
