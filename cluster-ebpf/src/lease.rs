//! Ownership by lease (R-XDP-4): the controller writes each lease's end; the program answers
//! only before it, so that a node whose controller died falls silent by itself.

use aya_ebpf::helpers::generated::bpf_ktime_get_ns;

use crate::maps::FWC_LEASES;

/// Whether this node may act for a lease slot right now.
#[derive(PartialEq, Eq)]
pub(crate) enum Ownership {
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
pub(crate) fn ownership(slot: &u32) -> Ownership {
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
