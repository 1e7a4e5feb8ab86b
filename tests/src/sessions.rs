//! Connections through the lab firewall for the session-synchronization tests: TCP, UDP and
//! ICMP flows from an intranet client to the internet client, hidden behind group0's address.
//! Each check has the *server* side speak first where the protocol allows, so that a node that
//! lacks the flow's entry shows (it drops the packet, or resets the connection).

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{
    Lab, in_netns,
    seed::{GROUP0_INET_FIP, INET_CLIENT, INET_CLIENT_ADDRESS, INTRA_CLIENT1},
};

const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// group0 of the seed on the internet and intranet sides, hiding the intranet behind its
/// internet address, manual failback: the group the session tests and benchmark move.
pub const GROUP0_HIDE_NAT: &str = r#"
[[group]]
name = "group0"
policy = ["fws1", "fws2"]
failback = "manual"

  [[group.fip]]
  address = "192.0.2.10/24"
  interface = "eth0"
  hide = ["203.0.113.0/24"]

  [[group.fip]]
  address = "203.0.113.10/24"
  interface = "eth2"
"#;

/// A TCP connection: (client end, server end).
pub struct TcpFlow {
    pub client: TcpStream,
    pub server: TcpStream,
}

impl TcpFlow {
    /// Opens a connection to `port` of the internet client; the server sees group0's address.
    pub fn open(lab: &Lab, port: u16) -> Result<Self> {
        let at = SocketAddrV4::new(INET_CLIENT_ADDRESS, port);
        let listener = in_netns(lab.ns(INET_CLIENT), move || TcpListener::bind(at))??;
        let client = in_netns(lab.ns(INTRA_CLIENT1), move || {
            TcpStream::connect_timeout(&at.into(), Duration::from_secs(2))
        })??;
        let (server, seen) = listener.accept()?;
        ensure!(
            seen.ip() == std::net::IpAddr::V4(GROUP0_INET_FIP),
            "hidden behind group0's address, not {seen}"
        );
        for end in [&client, &server] {
            end.set_read_timeout(Some(READ_TIMEOUT))?;
        }
        Ok(Self { client, server })
    }

    /// The client's source port: the flow's key in the connection-tracking table.
    pub fn client_port(&self) -> Result<u16> {
        Ok(self.client.local_addr()?.port())
    }

    /// The server sends, then the client answers.
    pub fn check(&self) -> Result<()> {
        exchange(&self.server, &self.client, b"the server speaks first")
            .context("server to client")?;
        exchange(&self.client, &self.server, b"and the client answers").context("client to server")
    }
}

/// Sends `text` on `from` and reads it on `to`.
pub fn exchange(from: &TcpStream, to: &TcpStream, text: &[u8]) -> Result<()> {
    (&*from).write_all(text)?;
    let mut got = vec![0u8; text.len()];
    (&*to).read_exact(&mut got)?;
    ensure!(got == text, "read {got:?}");
    Ok(())
}

/// A UDP flow: the client's socket and the server's, which learned the client's (NAT'd)
/// address from the first datagram.
pub struct UdpFlow {
    client: UdpSocket,
    server: UdpSocket,
    client_seen_as: SocketAddr,
}

impl UdpFlow {
    pub fn open(lab: &Lab, port: u16) -> Result<Self> {
        let at = SocketAddrV4::new(INET_CLIENT_ADDRESS, port);
        let server = in_netns(lab.ns(INET_CLIENT), move || UdpSocket::bind(at))??;
        let client = in_netns(lab.ns(INTRA_CLIENT1), move || {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            socket.connect(at)?;
            Ok::<_, std::io::Error>(socket)
        })??;
        for socket in [&client, &server] {
            socket.set_read_timeout(Some(READ_TIMEOUT))?;
        }
        client.send(b"hello")?;
        let mut buffer = [0u8; 64];
        let (_, client_seen_as) = server.recv_from(&mut buffer)?;
        ensure!(
            client_seen_as.ip() == std::net::IpAddr::V4(GROUP0_INET_FIP),
            "hidden behind group0's address, not {client_seen_as}"
        );
        Ok(Self {
            client,
            server,
            client_seen_as,
        })
    }

    pub fn client_port(&self) -> Result<u16> {
        Ok(self.client.local_addr()?.port())
    }

    /// The server sends first (a node without the flow's NAT binding cannot deliver it), then
    /// the client.
    pub fn check(&self) -> Result<()> {
        let mut buffer = [0u8; 64];
        self.server.send_to(b"server first", self.client_seen_as)?;
        let n = self.client.recv(&mut buffer).context("server to client")?;
        ensure!(&buffer[..n] == b"server first");
        self.client.send(b"client second")?;
        let (n, from) = self
            .server
            .recv_from(&mut buffer)
            .context("client to server")?;
        ensure!(
            &buffer[..n] == b"client second" && from == self.client_seen_as,
            "from {from}"
        );
        Ok(())
    }
}

/// An ICMP echo flow with one identifier (one connection-tracking entry), pinged from the
/// intranet client to the internet client through a raw socket.
pub struct IcmpFlow {
    socket: socket2::Socket,
    pub id: u16,
    sequence: u16,
}

impl IcmpFlow {
    pub fn open(lab: &Lab, id: u16) -> Result<Self> {
        let socket = in_netns(lab.ns(INTRA_CLIENT1), || {
            socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::RAW,
                Some(socket2::Protocol::ICMPV4),
            )
        })??;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut flow = Self {
            socket,
            id,
            sequence: 0,
        };
        flow.check().context("the first echo")?;
        Ok(flow)
    }

    /// One echo request answered (up to three tries 200 ms apart: ICMP has no retransmission
    /// of its own, and one request may meet the moment an address moves).
    pub fn check(&mut self) -> Result<()> {
        for _ in 0..3 {
            self.sequence = self.sequence.wrapping_add(1);
            let mut packet = [0u8; 16];
            packet[0] = 8;
            packet[4..6].copy_from_slice(&self.id.to_be_bytes());
            packet[6..8].copy_from_slice(&self.sequence.to_be_bytes());
            packet[8..].copy_from_slice(b"fwcsync!");
            let sum = checksum(&packet);
            packet[2..4].copy_from_slice(&sum.to_be_bytes());
            let to = SocketAddr::V4(SocketAddrV4::new(INET_CLIENT_ADDRESS, 0));
            self.socket.send_to(&packet, &to.into())?;
            let deadline = std::time::Instant::now() + Duration::from_millis(200);
            while std::time::Instant::now() < deadline {
                let mut buffer = [std::mem::MaybeUninit::<u8>::uninit(); 256];
                let Ok(n) = self.socket.recv(&mut buffer) else {
                    break;
                };
                // SAFETY: recv initialised the first n bytes.
                let bytes: Vec<u8> = buffer[..n]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                let header = usize::from(bytes.first().map_or(0, |b| b & 0x0f)) * 4;
                let Some(icmp) = bytes.get(header..header + 8) else {
                    continue;
                };
                if icmp[0] == 0
                    && icmp[4..6] == self.id.to_be_bytes()
                    && icmp[6..8] == self.sequence.to_be_bytes()
                {
                    return Ok(());
                }
            }
        }
        bail!("no echo reply for ICMP id {}", self.id)
    }
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether `host`'s kernel table holds the flow of `protocol` whose client-side key is `key`
/// (the source port for TCP and UDP, the identifier for ICMP).
pub fn tracked(lab: &Lab, host: &str, protocol: &str, key: u16) -> Result<bool> {
    let key = key.to_string();
    let option = if protocol == "icmp" {
        "--icmp-id"
    } else {
        "--orig-port-src"
    };
    let output = lab.run(host, "conntrack", &["-L", "-p", protocol, option, &key])?;
    Ok(String::from_utf8_lossy(&output.stdout).contains("src="))
}
