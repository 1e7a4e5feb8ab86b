//! Traffic generators for benchmarks: raw frames blasted from a packet socket.

use std::{
    mem::size_of,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

/// A send-only packet socket (protocol 0: it receives nothing) bound to one interface.
pub struct Blaster {
    fd: OwnedFd,
}

impl Blaster {
    /// Opens the socket on `ifname` in the calling thread's namespace.
    pub fn open(ifname: &str) -> Result<Self> {
        let ifindex =
            nix::net::if_::if_nametoindex(ifname).with_context(|| format!("interface {ifname}"))?;
        // SAFETY: plain socket(2); the fd is owned at once.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
        }
        // SAFETY: new valid descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zero is valid for sockaddr_ll.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_ifindex = ifindex as i32;
        // SAFETY: valid sockaddr_ll.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&address as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("bind(AF_PACKET)");
        }
        Ok(Self { fd })
    }

    /// Sends `frames` round-robin in batches (sendmmsg) for `duration`; returns frames sent.
    pub fn blast(&self, frames: &[Vec<u8>], duration: Duration) -> Result<u64> {
        const BATCH: usize = 64;
        let mut iovecs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        let mut sent = 0u64;
        let mut next = 0usize;
        let deadline = Instant::now() + duration;
        // SAFETY: zero is valid for mmsghdr.
        let mut messages: Vec<libc::mmsghdr> =
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        while Instant::now() < deadline {
            for message in messages.iter_mut() {
                message.msg_hdr.msg_iov = &mut iovecs[next];
                message.msg_hdr.msg_iovlen = 1;
                next = (next + 1) % iovecs.len();
            }
            // SAFETY: every message points at a live iovec of a live frame.
            let rc = unsafe {
                libc::sendmmsg(self.fd.as_raw_fd(), messages.as_mut_ptr(), BATCH as u32, 0)
            };
            if rc < 0 {
                let error = std::io::Error::last_os_error();
                if error.raw_os_error() == Some(libc::ENOBUFS) {
                    continue;
                }
                return Err(error).context("sendmmsg");
            }
            sent += rc as u64;
        }
        Ok(sent)
    }
}
