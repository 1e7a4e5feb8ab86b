//! The maps of the data path, pinned by the controller (R-XDP-3); their names are
//! `cluster_common::maps`.

use aya_ebpf::{
    btf_maps::{Array, PerCpuArray},
    macros::btf_map,
};
use cluster_common::{
    ADDRESS_TABLE_BUCKETS, ADDRESS6_TABLE_BUCKETS, Address6Bucket, AddressBucket, AddressHits,
    Counters, FlowShareTables, Lease, MAX_ADDRESSES, MAX_LEASES, NodeConfig,
};

const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Memory-mapped so that the controller lays out the spare half in place.
#[btf_map]
pub(crate) static FWC_ADDRESSES: Array<
    AddressBucket,
    { ADDRESS_TABLE_BUCKETS as usize },
    { BPF_F_MMAPABLE as usize },
> = Array::new();
/// The IPv6 addresses, laid out and flipped as [`FWC_ADDRESSES`] (the same half in use).
#[btf_map]
pub(crate) static FWC_ADDR6: Array<
    Address6Bucket,
    { ADDRESS6_TABLE_BUCKETS as usize },
    { BPF_F_MMAPABLE as usize },
> = Array::new();
/// Memory-mapped: the controller renews a lease with one store.
#[btf_map]
pub(crate) static FWC_LEASES: Array<Lease, { MAX_LEASES as usize }, { BPF_F_MMAPABLE as usize }> =
    Array::new();
/// The flow-share tables as a map: declared for its definition only (typed value, so that bpftool
/// names the fields; memory-mapped, so that the controller reassigns buckets with plain stores).
/// The code reads the same map through [`FWC_FLOW_TABLES`].
#[btf_map]
pub(crate) static FWC_FLOW: Array<FlowShareTables, 1, { BPF_F_MMAPABLE as usize }> = Array::new();
/// [`FWC_FLOW`]'s value as a global variable (`cluster_common::FLOW_TABLES_SYMBOL` in
/// `cluster_common::FLOW_TABLES_SECTION`; the loader binds the section to the pinned map): read by
/// indexed loads, with no map lookup. Never written here.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".bss.fwc_flow")]
// SAFETY: plain integers and arrays of them, for which zero is a valid value.
pub(crate) static mut FWC_FLOW_TABLES: FlowShareTables = unsafe { core::mem::zeroed() };
#[btf_map]
pub(crate) static FWC_NODE: Array<NodeConfig, 1> = Array::new();
#[btf_map]
pub static FWC_COUNTERS: PerCpuArray<Counters, 1> = PerCpuArray::new();
#[btf_map]
pub(crate) static FWC_ADDR_HITS: PerCpuArray<AddressHits, { MAX_ADDRESSES as usize }> =
    PerCpuArray::new();
