//! ctnetlink, the kernel's interface to its connection-tracking table, as far as fwclusterd
//! uses it beside conntrackd: requests answered with an acknowledgement, table dumps, and
//! event subscriptions. Messages are netlink-packet-netfilter's.

use std::{io, time::Duration};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterMessageInner};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

/// Why a ctnetlink exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum CtnetlinkError {
    #[error("ctnetlink socket: {0}")]
    Socket(io::Error),
    #[error("writing to ctnetlink: {0}")]
    Send(io::Error),
    #[error("reading from ctnetlink: {0}")]
    Receive(io::Error),
    #[error("the kernel's ctnetlink message cannot be read: {0}")]
    Decode(String),
    #[error("the kernel refused a ctnetlink request: {}", io::Error::from_raw_os_error(*.0))]
    Refused(i32),
}

/// How long the kernel may take to answer a request (it answers at once, unless the socket is
/// broken): no caller waits for good.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// A ctnetlink socket of this network namespace.
pub struct Ctnetlink {
    socket: Socket,
    port: u32,
    sequence: u32,
    buffer: Vec<u8>,
}

impl Ctnetlink {
    /// A socket for requests and dumps.
    pub fn open() -> Result<Self, CtnetlinkError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(CtnetlinkError::Socket)?;
        let port = socket
            .bind_auto()
            .map_err(CtnetlinkError::Socket)?
            .port_number();
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(CtnetlinkError::Socket)?;
        let this = Self {
            socket,
            port,
            sequence: 0,
            buffer: vec![0; 1 << 20],
        };
        this.wake_every(ANSWER_TIMEOUT)?;
        Ok(this)
    }

    /// A socket that receives the kernel's events of `groups` (`NFNLGRP_*`), waking at least
    /// every `tick` so that its reader can stop.
    pub fn subscribe(groups: &[u32], tick: Duration) -> Result<Self, CtnetlinkError> {
        let this = Self::open()?;
        for &group in groups {
            this.socket
                .add_membership(group)
                .map_err(CtnetlinkError::Socket)?;
        }
        this.wake_every(tick)?;
        Ok(this)
    }

    /// A receive returns after `timeout` at the latest.
    fn wake_every(&self, timeout: Duration) -> Result<(), CtnetlinkError> {
        nix::sys::socket::setsockopt(
            &self.socket,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(
                timeout.as_secs() as i64,
                i64::from(timeout.subsec_micros()),
            ),
        )
        .map_err(|e| CtnetlinkError::Socket(e.into()))
    }

    /// The socket's netlink port: the kernel names it as the origin of the events its
    /// requests cause.
    pub fn port(&self) -> u32 {
        self.port
    }

    fn send(
        &mut self,
        family: u8,
        flags: u16,
        inner: NetfilterMessageInner,
    ) -> Result<u32, CtnetlinkError> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.sequence;
        let mut message = NetlinkMessage::new(
            header,
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(family.into(), 0, 0),
                inner,
            )),
        );
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        self.socket.send(&bytes, 0).map_err(CtnetlinkError::Send)?;
        Ok(self.sequence)
    }

    /// One request, answered with an acknowledgement: `Ok(())`, or the error the kernel gave.
    pub fn request(
        &mut self,
        family: u8,
        flags: u16,
        inner: NetfilterMessageInner,
    ) -> Result<(), CtnetlinkError> {
        let sequence = self.send(family, NLM_F_REQUEST | NLM_F_ACK | flags, inner)?;
        let mut answer = Err(CtnetlinkError::Decode("no answer".into()));
        self.receive(sequence, |message| {
            if let NetlinkPayload::Error(e) = message.payload {
                answer = match e.code.map_or(0, |c| -c.get()) {
                    0 => Ok(()),
                    code => Err(CtnetlinkError::Refused(code)),
                };
                return false;
            }
            true
        })?;
        answer
    }

    /// One object (`inner` names it), or `None` when the kernel has none such.
    pub fn get(
        &mut self,
        family: u8,
        inner: NetfilterMessageInner,
    ) -> Result<Option<NetfilterMessage>, CtnetlinkError> {
        let sequence = self.send(family, NLM_F_REQUEST, inner)?;
        let mut answer = Ok(None);
        self.receive(sequence, |message| {
            answer = match message.payload {
                NetlinkPayload::InnerMessage(object) => Ok(Some(object)),
                NetlinkPayload::Error(e) => match e.code.map_or(0, |c| -c.get()) {
                    0 | libc::ENOENT => Ok(None),
                    code => Err(CtnetlinkError::Refused(code)),
                },
                _ => return true,
            };
            false
        })?;
        answer
    }

    /// Every object of a dump request (`inner` names the kind), in both families.
    pub fn dump(
        &mut self,
        inner: NetfilterMessageInner,
    ) -> Result<Vec<NetfilterMessage>, CtnetlinkError> {
        let sequence = self.send(libc::AF_UNSPEC as u8, NLM_F_REQUEST | NLM_F_DUMP, inner)?;
        let mut objects = Vec::new();
        let mut refused = None;
        self.receive(sequence, |message| match message.payload {
            NetlinkPayload::Done(_) => false,
            NetlinkPayload::Error(e) => {
                refused = Some(e.code.map_or(0, |c| -c.get()));
                false
            }
            NetlinkPayload::InnerMessage(object) => {
                objects.push(object);
                true
            }
            _ => true,
        })?;
        match refused {
            Some(code) if code != 0 => Err(CtnetlinkError::Refused(code)),
            _ => Ok(objects),
        }
    }

    /// The next messages that arrive (events), handed to `each` until it returns `false`;
    /// `Ok(false)` when none arrived within the subscription's tick.
    pub fn events(
        &mut self,
        mut each: impl FnMut(NetlinkMessage<NetfilterMessage>) -> bool,
    ) -> Result<bool, CtnetlinkError> {
        let size = match self.socket.recv(&mut &mut self.buffer[..], 0) {
            Ok(size) => size,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(false);
            }
            Err(e) => return Err(CtnetlinkError::Receive(e)),
        };
        for message in split(&self.buffer[..size])? {
            if !each(message) {
                break;
            }
        }
        Ok(true)
    }

    /// Reads messages of request `sequence`, handing each to `each` until it returns `false`.
    /// A receive timeout is an error: the kernel answers at once.
    fn receive(
        &mut self,
        sequence: u32,
        mut each: impl FnMut(NetlinkMessage<NetfilterMessage>) -> bool,
    ) -> Result<(), CtnetlinkError> {
        loop {
            let size = self
                .socket
                .recv(&mut &mut self.buffer[..], 0)
                .map_err(CtnetlinkError::Receive)?;
            for message in split(&self.buffer[..size])? {
                // A late answer to an earlier request.
                if message.header.sequence_number != sequence {
                    continue;
                }
                if !each(message) {
                    return Ok(());
                }
            }
        }
    }
}

/// The netlink messages in one datagram.
fn split(mut bytes: &[u8]) -> Result<Vec<NetlinkMessage<NetfilterMessage>>, CtnetlinkError> {
    let mut messages = Vec::new();
    while !bytes.is_empty() {
        let length = NetlinkBuffer::new_checked(bytes)
            .map_err(|e| CtnetlinkError::Decode(e.to_string()))?
            .length() as usize;
        if length < 16 || length > bytes.len() {
            return Err(CtnetlinkError::Decode(format!(
                "a message of {length} bytes in {} received",
                bytes.len()
            )));
        }
        messages.push(
            NetlinkMessage::<NetfilterMessage>::deserialize(&bytes[..length])
                .map_err(|e| CtnetlinkError::Decode(e.to_string()))?,
        );
        bytes = bytes.get(length.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(messages)
}
