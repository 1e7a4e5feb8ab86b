//! The product's XDP object: the one program the controller attaches to every data interface.
//! Everything it does is in the library ([`cluster_ebpf::run`]).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use aya_ebpf::{macros::xdp, programs::XdpContext};

/// The data path program attached to every data interface.
#[xdp]
pub fn fwcluster_xdp(ctx: XdpContext) -> u32 {
    cluster_ebpf::run(&ctx)
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
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
