//! Table tests of the XDP program with BPF_PROG_TEST_RUN on crafted frames.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use aya::programs::{TestRun as _, TestRunOptions};
use cluster_common::{
    AddressEntry, AddressKey, AddressKey6, AddressKind, Counters, FlowShare, HashMode,
    MAX_FLOWSHARE_INTERFACES,
    flowhash::{bucket_of, fold_ipv6, hash_five_tuple, hash_src, hash_src_dst},
};
use cluster_ctl::dataplane::{Dataplane, DataplaneError, Origin};
use fwcluster_lab::{
    HostSpec, Lab, Scratch, Topology,
    arp::{ArpFrame, BROADCAST},
    frames::{IPPROTO_TCP, IPPROTO_UDP, Ipv4Packet, Ipv6Packet, ipv6_frame},
    ndp::{Advertisement, OVERRIDE, ROUTER, SOLICITED, Solicitation},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
/// Loopback exists in every namespace, so the kernel accepts it as the ingress interface.
const IFINDEX: u32 = 1;
const LEASE: Duration = Duration::from_secs(60);

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x64];
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PARP_MAC: [u8; 6] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
const SHARED_MAC: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x02, 0x1e];
const SHARED_MAC_INSIDE: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x71, 0x1e];
const OWNED_FIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const OWNED_PARP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const RELEASED_FIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const UNLEASED_FIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);
const SHARED_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 30);

const CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
const OWNED_FIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
const OWNED_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const OWNED_PARP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20);
const RELEASED_FIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11);
const UNLEASED_FIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x12);

const OWNED_SLOT: u32 = 0;
const RELEASED_SLOT: u32 = 1;
const UNLEASED_SLOT: u32 = 2;
const SHARE_SLOT: u32 = 3;

struct Harness {
    dataplane: Dataplane,
    _scratch: Scratch,
}

fn key(addr: Ipv4Addr) -> AddressKey {
    AddressKey {
        ifindex: IFINDEX,
        addr: u32::from_ne_bytes(addr.octets()),
    }
}

fn key6(addr: Ipv6Addr) -> AddressKey6 {
    AddressKey6::new(IFINDEX, addr.octets())
}

fn entry(slot: u32, hit_slot: u32, mac: [u8; 6], kind: AddressKind) -> AddressEntry {
    // A shared (multicast) MAC may not be a frame's source.
    let eth_source = if kind == AddressKind::Shared {
        NODE_MAC
    } else {
        mac
    };
    AddressEntry::new(slot, hit_slot, kind, mac, eth_source)
}

impl Harness {
    fn new(node_id: u32) -> Self {
        let scratch = Scratch::new().expect("scratch");
        let mut dataplane =
            Dataplane::open(&scratch.pin_dir("node"), node_id, false).expect("load");
        let addresses = [
            (
                key(OWNED_FIP),
                entry(OWNED_SLOT, 0, NODE_MAC, AddressKind::Fip),
            ),
            (
                key(OWNED_PARP),
                entry(OWNED_SLOT, 1, PARP_MAC, AddressKind::Parp),
            ),
            (
                key(RELEASED_FIP),
                entry(RELEASED_SLOT, 2, NODE_MAC, AddressKind::Fip),
            ),
            (
                key(UNLEASED_FIP),
                entry(UNLEASED_SLOT, 3, NODE_MAC, AddressKind::Fip),
            ),
        ];
        dataplane
            .set_addresses(addresses.iter().map(|(k, v)| (k, v)))
            .unwrap();
        let addresses6 = [
            (
                key6(OWNED_FIP6),
                entry(OWNED_SLOT, 10, NODE_MAC, AddressKind::Fip),
            ),
            (
                key6(OWNED_GATEWAY6),
                entry(OWNED_SLOT, 11, NODE_MAC, AddressKind::Fip).router(true),
            ),
            (
                key6(OWNED_PARP6),
                entry(OWNED_SLOT, 12, PARP_MAC, AddressKind::Parp),
            ),
            (
                key6(RELEASED_FIP6),
                entry(RELEASED_SLOT, 13, NODE_MAC, AddressKind::Fip),
            ),
            (
                key6(UNLEASED_FIP6),
                entry(UNLEASED_SLOT, 14, NODE_MAC, AddressKind::Fip),
            ),
        ];
        dataplane
            .set_addresses6(addresses6.iter().map(|(k, v)| (k, v)))
            .unwrap();
        dataplane.acquire(OWNED_SLOT, 1, LEASE).unwrap();
        dataplane.acquire(RELEASED_SLOT, 1, LEASE).unwrap();
        dataplane.release(RELEASED_SLOT, 2).unwrap();
        Self {
            dataplane,
            _scratch: scratch,
        }
    }

    /// Runs the program on `frame`; returns the action and the frame as the program left it.
    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run_on(IFINDEX, frame)
    }

    /// Runs the program on `frame` received on `ifindex` (of the calling thread's namespace).
    fn run_on(&self, ifindex: u32, frame: &[u8]) -> (u32, Vec<u8>) {
        run_program(&self.dataplane, ifindex, frame)
    }

    fn counters(&self) -> Counters {
        self.dataplane.counters().unwrap()
    }
}

/// Runs `dataplane`'s program on `frame` received on `ifindex`; returns the action and the frame
/// as the program left it.
fn run_program(dataplane: &Dataplane, ifindex: u32, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let ctx: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let ctx_bytes: Vec<u8> = ctx.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let result = dataplane
        .program()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx_bytes),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}

fn request(target: Ipv4Addr) -> ArpFrame {
    ArpFrame::request(CLIENT_MAC, CLIENT_IP, target)
}

#[test]
fn owned_fip_is_answered_with_a_correct_reply() {
    let h = Harness::new(0);
    let (action, out) = h.run(&request(OWNED_FIP).encode());
    assert_eq!(action, XDP_TX);
    let reply = ArpFrame::decode(&out).expect("an ARP frame");
    assert_eq!(
        reply,
        ArpFrame {
            eth_dst: CLIENT_MAC,
            eth_src: NODE_MAC,
            vlan: None,
            op: 2,
            sha: NODE_MAC,
            spa: OWNED_FIP,
            tha: CLIENT_MAC,
            tpa: CLIENT_IP,
        }
    );
    assert_eq!(out.len(), 60, "rewritten in place, same length");
    let c = h.counters();
    assert_eq!((c.packets, c.arp_requests, c.arp_replies), (1, 1, 1));
    assert_eq!(h.dataplane.address_replies(0).unwrap(), 1);
}

#[test]
fn owned_parp_is_answered_with_its_configured_mac() {
    let h = Harness::new(0);
    let (action, out) = h.run(&request(OWNED_PARP).encode());
    assert_eq!(action, XDP_TX);
    let reply = ArpFrame::decode(&out).unwrap();
    assert_eq!(
        (reply.sha, reply.eth_src, reply.spa),
        (PARP_MAC, PARP_MAC, OWNED_PARP)
    );
    assert_eq!(h.dataplane.address_replies(1).unwrap(), 1);
    assert_eq!(h.dataplane.address_replies(0).unwrap(), 0);
}

#[test]
fn cluster_addresses_not_owned_here_are_dropped() {
    let h = Harness::new(0);
    assert_eq!(h.run(&request(RELEASED_FIP).encode()).0, XDP_DROP);
    assert_eq!(h.run(&request(UNLEASED_FIP).encode()).0, XDP_DROP);
    let c = h.counters();
    assert_eq!((c.arp_not_owned, c.arp_replies), (2, 0));
    // Not a cluster address at all: the kernel decides.
    assert_eq!(
        h.run(&request(Ipv4Addr::new(192, 0, 2, 1)).encode()).0,
        XDP_PASS
    );
}

#[test]
fn an_expired_lease_falls_silent_and_only_the_current_epoch_renews() {
    let mut h = Harness::new(0);
    h.dataplane
        .acquire(OWNED_SLOT, 2, Duration::from_millis(20))
        .unwrap();
    assert_eq!(h.run(&request(OWNED_FIP).encode()).0, XDP_TX);
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(h.run(&request(OWNED_FIP).encode()).0, XDP_DROP);
    assert_eq!(h.counters().arp_lease_expired, 1);

    // A stale controller naming the old epoch cannot bring it back.
    assert!(matches!(
        h.dataplane.renew(OWNED_SLOT, 1, LEASE),
        Err(DataplaneError::StaleEpoch {
            requested: 1,
            current: 2,
            ..
        })
    ));
    assert!(matches!(
        h.dataplane.acquire(OWNED_SLOT, 2, LEASE),
        Err(DataplaneError::EpochNotIncreasing { .. })
    ));
    assert_eq!(h.run(&request(OWNED_FIP).encode()).0, XDP_DROP);
    // Not even the current epoch revives an expired lease (the peer may hold it by now)…
    assert!(matches!(
        h.dataplane.renew(OWNED_SLOT, 2, LEASE),
        Err(DataplaneError::Expired { .. })
    ));
    assert_eq!(h.run(&request(OWNED_FIP).encode()).0, XDP_DROP);
    // …it must be acquired anew under a new epoch, and then renews.
    h.dataplane.acquire(OWNED_SLOT, 3, LEASE).unwrap();
    h.dataplane.renew(OWNED_SLOT, 3, LEASE).unwrap();
    assert_eq!(h.run(&request(OWNED_FIP).encode()).0, XDP_TX);
    // A released slot cannot be renewed, not even under its epoch.
    assert!(matches!(
        h.dataplane.renew(RELEASED_SLOT, 2, LEASE),
        Err(DataplaneError::NotOwned { .. })
    ));
}

#[test]
fn a_lease_is_answered_until_its_end_and_no_frame_after_it_by_the_clock_alone() {
    let mut h = Harness::new(0);
    let frame = request(OWNED_FIP).encode();
    // Granted for an hour, then anew for 30 ms (a restarted controller with a shorter lease):
    // nothing of the long grant survives.
    h.dataplane
        .acquire(OWNED_SLOT, 2, Duration::from_secs(3600))
        .unwrap();
    assert_eq!(h.run(&frame).0, XDP_TX);
    let before = Instant::now();
    h.dataplane
        .acquire(OWNED_SLOT, 3, Duration::from_millis(30))
        .unwrap();
    // The data path computed the end from its clock between `before` and `after`.
    let after = Instant::now();
    let (mut answered, mut dropped) = (0, 0);
    while before.elapsed() < Duration::from_millis(60) {
        let started = Instant::now();
        let verdict = h.run(&frame).0;
        if verdict == XDP_TX {
            answered += 1;
            assert!(
                started < after + Duration::from_millis(30),
                "answered {:?} after the grant, past its 30 ms lease",
                started - before
            );
        } else {
            assert_eq!(verdict, XDP_DROP);
            dropped += 1;
            assert!(
                Instant::now() >= before + Duration::from_millis(30),
                "dropped {:?} after the grant, inside its 30 ms lease",
                started - before
            );
        }
    }
    assert!(
        answered > 0 && dropped > 0,
        "{answered} answered, {dropped} dropped"
    );
    assert_eq!(h.counters().arp_lease_expired, dropped);
    // A release falls silent at once.
    h.dataplane
        .acquire(OWNED_SLOT, 4, Duration::from_secs(3600))
        .unwrap();
    assert_eq!(h.run(&frame).0, XDP_TX);
    h.dataplane.release(OWNED_SLOT, 5).unwrap();
    assert_eq!(h.run(&frame).0, XDP_DROP);
}

#[test]
fn a_new_address_set_replaces_the_old_at_once_and_an_adopting_controller_keeps_it() {
    let scratch = Scratch::new().unwrap();
    let pin_dir = scratch.pin_dir("node");
    let mut dataplane = Dataplane::open(&pin_dir, 0, false).unwrap();
    let run = |dataplane: &Dataplane, target: Ipv4Addr| {
        run_program(dataplane, IFINDEX, &request(target).encode()).0
    };
    dataplane
        .replace_addresses(
            [
                (
                    key(OWNED_FIP),
                    entry(OWNED_SLOT, 0, NODE_MAC, AddressKind::Fip),
                ),
                (
                    key(RELEASED_FIP),
                    entry(OWNED_SLOT, 1, NODE_MAC, AddressKind::Fip),
                ),
            ],
            [],
        )
        .unwrap();
    dataplane.acquire(OWNED_SLOT, 1, LEASE).unwrap();
    assert_eq!(run(&dataplane, OWNED_FIP), XDP_TX);
    assert_eq!(run(&dataplane, RELEASED_FIP), XDP_TX);
    assert_eq!(run(&dataplane, OWNED_PARP), XDP_PASS);

    // A new configuration: one address gone, one new, one kept.
    let new_set = [
        (
            key(OWNED_FIP),
            entry(OWNED_SLOT, 0, NODE_MAC, AddressKind::Fip),
        ),
        (
            key(OWNED_PARP),
            entry(OWNED_SLOT, 2, PARP_MAC, AddressKind::Parp),
        ),
    ];
    dataplane.replace_addresses(new_set, []).unwrap();
    assert_eq!(
        run(&dataplane, RELEASED_FIP),
        XDP_PASS,
        "no longer a cluster address"
    );
    assert_eq!(run(&dataplane, OWNED_PARP), XDP_TX);
    assert_eq!(run(&dataplane, OWNED_FIP), XDP_TX);

    // A set that does not fit is refused and changes nothing.
    let too_many = (0..=cluster_common::ADDRESS_TABLE_CAPACITY as u32).map(|i| {
        (
            AddressKey {
                ifindex: IFINDEX,
                addr: 0x0a00_0000 + i,
            },
            entry(OWNED_SLOT, 3, NODE_MAC, AddressKind::Fip),
        )
    });
    assert!(matches!(
        dataplane.replace_addresses(too_many, []),
        Err(DataplaneError::AddressTable(_))
    ));
    assert_eq!(run(&dataplane, OWNED_PARP), XDP_TX);
    assert_eq!(run(&dataplane, RELEASED_FIP), XDP_PASS);

    // A restarted controller adopts the table as it is.
    drop(dataplane);
    let mut adopted = Dataplane::open(&pin_dir, 0, false).unwrap();
    assert_eq!(adopted.origin(), Origin::Adopted);
    assert_eq!(
        adopted.addresses(),
        &new_set
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>()
    );
    assert_eq!(run(&adopted, OWNED_PARP), XDP_TX);
    assert_eq!(run(&adopted, RELEASED_FIP), XDP_PASS);
    // …and its first change still goes to the half not in use.
    adopted
        .set_addresses([(
            &key(RELEASED_FIP),
            &entry(OWNED_SLOT, 1, NODE_MAC, AddressKind::Fip),
        )])
        .unwrap();
    assert_eq!(run(&adopted, RELEASED_FIP), XDP_TX);
    assert_eq!(run(&adopted, OWNED_PARP), XDP_TX);
}

#[test]
fn a_vlan_tagged_request_is_answered_with_its_tag_only_for_an_address_of_that_vlan() {
    let mut h = Harness::new(0);
    let vlan_fip = Ipv4Addr::new(192, 0, 2, 42);
    h.dataplane
        .replace_addresses(
            [
                (
                    key(OWNED_FIP),
                    entry(OWNED_SLOT, 0, NODE_MAC, AddressKind::Fip),
                ),
                (
                    AddressKey {
                        ifindex: cluster_common::vlan_key_ifindex(IFINDEX, 42),
                        addr: u32::from_ne_bytes(vlan_fip.octets()),
                    },
                    entry(OWNED_SLOT, 1, NODE_MAC, AddressKind::Fip),
                ),
            ],
            [],
        )
        .unwrap();
    let tagged = |target, vlan| {
        let mut frame = request(target);
        frame.vlan = vlan;
        h.run(&frame.encode())
    };
    // The address of VLAN 42, asked on VLAN 42: answered with the tag.
    let (action, out) = tagged(vlan_fip, Some(42));
    assert_eq!(action, XDP_TX);
    let reply = ArpFrame::decode(&out).unwrap();
    assert_eq!(reply.vlan, Some(42));
    assert_eq!((reply.op, reply.sha, reply.tpa), (2, NODE_MAC, CLIENT_IP));
    // Asked untagged or on another VLAN: another network, not answered.
    assert_eq!(tagged(vlan_fip, None).0, XDP_PASS);
    assert_eq!(tagged(vlan_fip, Some(43)).0, XDP_PASS);
    // The interface's own (untagged) address is not answered on any of its VLANs…
    assert_eq!(tagged(OWNED_FIP, Some(42)).0, XDP_PASS);
    // …but is with a priority tag only (VID 0 is the untagged network).
    assert_eq!(tagged(OWNED_FIP, Some(0)).0, XDP_TX);
    assert_eq!(tagged(OWNED_FIP, None).0, XDP_TX);
}

#[test]
fn truncated_frames_pass_untouched_at_every_length() {
    let h = Harness::new(0);
    // A priority tag (VID 0): the tag's length without leaving the untagged network.
    for vlan in [None, Some(0)] {
        let mut frame = request(OWNED_FIP);
        frame.vlan = vlan;
        let full = frame.encode();
        let arp_end = if vlan.is_some() { 46 } else { 42 };
        // The kernel refuses test frames shorter than an Ethernet header.
        for len in 14..arp_end {
            let before = h.counters().malformed;
            let (action, out) = h.run(&full[..len]);
            assert_eq!(action, XDP_PASS, "length {len} vlan {vlan:?}");
            assert_eq!(out, &full[..len], "length {len} untouched");
            assert_eq!(h.counters().malformed, before + 1, "length {len} counted");
        }
        assert_eq!(h.run(&full[..arp_end]).0, XDP_TX);
    }
    assert_eq!(h.counters().arp_replies, 2);
}

#[test]
fn wrong_hardware_or_protocol_types_pass_and_count_as_malformed() {
    let h = Harness::new(0);
    let good = request(OWNED_FIP).encode();
    // Offsets in the frame: htype 14, ptype 16, hlen 18, plen 19.
    for (offset, value) in [(14, 6u8), (17, 0xdd), (18, 8), (19, 16)] {
        let mut frame = good.clone();
        frame[offset] = value;
        let (action, out) = h.run(&frame);
        assert_eq!(action, XDP_PASS, "byte {offset} = {value}");
        assert_eq!(out, frame);
    }
    assert_eq!(h.counters().malformed, 4);
    assert_eq!(h.counters().arp_replies, 0);
}

#[test]
fn arp_replies_and_gratuitous_arp_pass_untouched() {
    let h = Harness::new(0);
    let mut reply = request(OWNED_FIP);
    reply.op = 2;
    let frame = reply.encode();
    assert_eq!(h.run(&frame), (XDP_PASS, frame.clone()));

    // Gratuitous request from another host claiming the owned address.
    let mut garp = ArpFrame::request(CLIENT_MAC, OWNED_FIP, OWNED_FIP);
    garp.eth_dst = BROADCAST;
    let frame = garp.encode();
    assert_eq!(h.run(&frame), (XDP_PASS, frame.clone()));
    // Gratuitous reply form.
    garp.op = 2;
    let frame = garp.encode();
    assert_eq!(h.run(&frame), (XDP_PASS, frame.clone()));
    assert_eq!(h.counters().arp_replies, 0);
}

#[test]
fn ipv4_ipv6_and_other_traffic_pass_untouched() {
    let h = Harness::new(0);
    let ipv4 = Ipv4Packet {
        eth_dst: NODE_MAC,
        eth_src: CLIENT_MAC,
        vlan: None,
        protocol: IPPROTO_TCP,
        src: CLIENT_IP,
        src_port: 40000,
        dst: OWNED_FIP,
        dst_port: 22,
        flags_fragment: 0,
    }
    .encode();
    assert_eq!(h.run(&ipv4), (XDP_PASS, ipv4.clone()));
    // Multicast IPv4 that is not flow-shared here.
    let mut multicast = ipv4.clone();
    multicast[0..6].copy_from_slice(&[0x01, 0, 0x5e, 0, 0, 0xfb]);
    assert_eq!(h.run(&multicast), (XDP_PASS, multicast.clone()));
    let ipv6 = ipv6_frame([0x33, 0x33, 0, 0, 0, 1], CLIENT_MAC);
    assert_eq!(h.run(&ipv6), (XDP_PASS, ipv6.clone()));
    let mut other = ipv4.clone();
    other[12..14].copy_from_slice(&0x88ccu16.to_be_bytes()); // LLDP
    assert_eq!(h.run(&other), (XDP_PASS, other.clone()));
    let c = h.counters();
    assert_eq!((c.packets, c.malformed, c.arp_requests), (4, 0, 0));
}

const SEED: u32 = 0x5eed_1234;
const BUCKETS: u32 = 1024;

fn share(ifindex: u32, mac: [u8; 6], mode: HashMode) -> FlowShare {
    FlowShare {
        ifindex,
        mac,
        lease: SHARE_SLOT,
        table: 0,
        buckets: BUCKETS,
        seed: SEED,
        local_mac: NODE_MAC,
        hash_mode: mode as u8,
        _pad: [0; 3],
        node_id: 0, // filled in by Dataplane::set_flowshare
    }
}

/// Buckets dealt round-robin over `nodes` nodes, as the controller does.
fn round_robin(nodes: u32) -> Vec<u32> {
    (0..BUCKETS).map(|b| b % nodes).collect()
}

/// Flow share on `interfaces` (ifindex, shared MAC), all with one table and seed.
fn flow_share_on(
    node_id: u32,
    nodes: u32,
    mode: HashMode,
    interfaces: &[(u32, [u8; 6])],
) -> Harness {
    let mut h = Harness::new(node_id);
    for (ifindex, mac) in interfaces {
        h.dataplane
            .set_flowshare(&share(*ifindex, *mac, mode))
            .unwrap();
    }
    h.dataplane.set_buckets(0, &round_robin(nodes)).unwrap();
    h.dataplane.acquire(SHARE_SLOT, 1, LEASE).unwrap();
    h
}

fn flow_share_harness(node_id: u32, nodes: u32, mode: HashMode) -> Harness {
    flow_share_on(node_id, nodes, mode, &[(IFINDEX, SHARED_MAC)])
}

fn flow(src: Ipv4Addr, src_port: u16, dst: Ipv4Addr, dst_port: u16, mac: [u8; 6]) -> Ipv4Packet {
    Ipv4Packet {
        eth_dst: mac,
        eth_src: CLIENT_MAC,
        vlan: None,
        protocol: IPPROTO_UDP,
        src,
        src_port,
        dst,
        dst_port,
        flags_fragment: 0,
    }
}

/// A deterministic spread of client addresses.
fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761)))
}

/// The `i`th flow of a deterministic spread: client address and port (the ports count up, as
/// a client's do).
fn spread_flow(i: u32) -> (Ipv4Addr, u16) {
    (client(i), 1024 + (i % 60_000) as u16)
}

/// The flow hash `mode` gives a UDP flow from `src:src_port` to the shared address, port 80.
fn expected_hash(mode: HashMode, src: Ipv4Addr, src_port: u16) -> u32 {
    let src = u32::from_ne_bytes(src.octets());
    let dst = u32::from_ne_bytes(SHARED_IP.octets());
    match mode {
        HashMode::Src => hash_src(SEED, src),
        HashMode::SrcDst => hash_src_dst(SEED, src, dst),
        HashMode::FiveTuple => {
            hash_five_tuple(SEED, IPPROTO_UDP, src, src_port.to_be(), dst, 80u16.to_be())
        }
    }
}

#[test]
fn flow_share_splits_flows_evenly_and_as_predicted() {
    const FLOWS: u32 = 100_000;
    for mode in [HashMode::Src, HashMode::SrcDst, HashMode::FiveTuple] {
        for nodes in [2u32, 3] {
            let h = flow_share_harness(0, nodes, mode);
            let owners = round_robin(nodes);
            let mut passed = 0u32;
            for i in 0..FLOWS {
                let (src, src_port) = spread_flow(i);
                let (action, out) = h.run(&flow(src, src_port, SHARED_IP, 80, SHARED_MAC).encode());
                let bucket = bucket_of(expected_hash(mode, src, src_port), BUCKETS);
                let expected = if owners[bucket as usize] == 0 {
                    XDP_PASS
                } else {
                    XDP_DROP
                };
                assert_eq!(
                    action, expected,
                    "{mode:?}: flow {i} from {src}:{src_port} in bucket {bucket}"
                );
                if action == XDP_PASS {
                    assert_eq!(&out[0..6], &NODE_MAC, "passed frames get the local MAC");
                    passed += 1;
                }
            }
            let share = f64::from(passed) / f64::from(FLOWS);
            let ideal = 1.0 / f64::from(nodes);
            assert!(
                (share - ideal).abs() <= 0.02 * ideal,
                "{mode:?}, {nodes} nodes: node 0 passed {share:.4}, ideal {ideal:.4}"
            );
            let c = h.counters();
            assert_eq!(c.flow_passed + c.flow_dropped, u64::from(FLOWS));
        }
    }
}

/// The flow-share address of the IPv6 tests.
const SHARED_IP6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x30);

/// An IPv6 address as the flow hash takes it: its four raw words folded.
fn folded(address: std::net::Ipv6Addr) -> u32 {
    let o = address.octets();
    fold_ipv6(std::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    }))
}

/// The `i`th IPv6 client: hosts of one /64 and of a few /64s around it, as a site's are.
fn client6(i: u32) -> std::net::Ipv6Addr {
    let spread = i.wrapping_mul(2_654_435_761);
    std::net::Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x100 + (i % 4) as u16,
        0,
        0x0200,
        0x5eff,
        (spread >> 16) as u16,
        spread as u16,
    )
}

#[test]
fn flow_share_splits_ipv6_flows_evenly_and_as_the_controller_predicts() {
    const FLOWS: u32 = 100_000;
    for mode in [HashMode::Src, HashMode::SrcDst, HashMode::FiveTuple] {
        for nodes in [2u32, 3] {
            let h = flow_share_harness(0, nodes, mode);
            let owners = round_robin(nodes);
            let mut passed = 0u32;
            for i in 0..FLOWS {
                let src = client6(i);
                let src_port = 1024 + (i % 60_000) as u16;
                let next_header = if i % 2 == 0 { IPPROTO_UDP } else { IPPROTO_TCP };
                let packet = Ipv6Packet {
                    eth_dst: SHARED_MAC,
                    eth_src: CLIENT_MAC,
                    next_header,
                    src,
                    src_port,
                    dst: SHARED_IP6,
                    dst_port: 443,
                };
                let (s, d) = (folded(src), folded(SHARED_IP6));
                let hash = match mode {
                    HashMode::Src => hash_src(SEED, s),
                    HashMode::SrcDst => hash_src_dst(SEED, s, d),
                    HashMode::FiveTuple => {
                        hash_five_tuple(SEED, next_header, s, src_port.to_be(), d, 443u16.to_be())
                    }
                };
                let bucket = bucket_of(hash, BUCKETS);
                let expected = if owners[bucket as usize] == 0 {
                    XDP_PASS
                } else {
                    XDP_DROP
                };
                let (action, out) = h.run(&packet.encode());
                assert_eq!(
                    action, expected,
                    "{mode:?}: flow {i} from {src} in bucket {bucket}"
                );
                if action == XDP_PASS {
                    assert_eq!(&out[0..6], &NODE_MAC, "passed frames get the local MAC");
                    passed += 1;
                }
                // The reply of a symmetric mode lands in the same bucket.
                if mode != HashMode::Src && i % 97 == 0 {
                    let reply = Ipv6Packet {
                        src: SHARED_IP6,
                        src_port: 443,
                        dst: src,
                        dst_port: src_port,
                        ..packet.clone()
                    };
                    assert_eq!(
                        h.run(&reply.encode()).0,
                        expected,
                        "{mode:?}: reply of flow {i}"
                    );
                }
            }
            let share = f64::from(passed) / f64::from(FLOWS);
            let ideal = 1.0 / f64::from(nodes);
            assert!(
                (share - ideal).abs() <= 0.02 * ideal,
                "{mode:?}, {nodes} nodes: node 0 passed {share:.4}, ideal {ideal:.4}"
            );
        }
    }
}

#[test]
fn ipv6_flow_share_hashes_packets_with_extension_headers_without_ports_and_passes_other_ipv6() {
    let h = flow_share_harness(0, 2, HashMode::FiveTuple);
    let owners = round_robin(2);
    // A fragment (next header 44): hashed under 44, without ports.
    for i in 0..200 {
        let src = client6(i);
        let fragment = Ipv6Packet {
            eth_dst: SHARED_MAC,
            eth_src: CLIENT_MAC,
            next_header: 44,
            src,
            src_port: 0,
            dst: SHARED_IP6,
            dst_port: 0,
        };
        let hash = hash_five_tuple(SEED, 44, folded(src), 0, folded(SHARED_IP6), 0);
        let expected = if owners[bucket_of(hash, BUCKETS) as usize] == 0 {
            XDP_PASS
        } else {
            XDP_DROP
        };
        assert_eq!(h.run(&fragment.encode()).0, expected, "fragment {i}");
    }
    // Truncated: the IPv6 header cut, or UDP without its ports: passed untouched, counted.
    let udp = Ipv6Packet {
        eth_dst: SHARED_MAC,
        eth_src: CLIENT_MAC,
        next_header: IPPROTO_UDP,
        src: client6(1),
        src_port: 5000,
        dst: SHARED_IP6,
        dst_port: 53,
    }
    .encode();
    let before = h.counters().malformed;
    for cut in [14 + 20, 14 + 40 + 2] {
        let frame = &udp[..cut];
        assert_eq!(h.run(frame), (XDP_PASS, frame.to_vec()), "cut at {cut}");
    }
    // A version other than 6 behind the IPv6 EtherType.
    let mut bad = udp.clone();
    bad[14] = 0x40;
    assert_eq!(h.run(&bad), (XDP_PASS, bad.clone()));
    assert_eq!(h.counters().malformed, before + 3);
    // IPv6 multicast that is no flow share's (all-nodes) passes untouched.
    let mut all_nodes = udp.clone();
    all_nodes[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(h.run(&all_nodes), (XDP_PASS, all_nodes.clone()));
}

/// A program loaded again over pinned maps (the program's pin gone, say) takes the flow-share
/// tables as they are: the loader writes a data section's initial contents into its map on
/// every load, and the controller gives it the current ones.
#[test]
fn a_program_loaded_over_the_pins_keeps_the_flow_share_tables() {
    let h = flow_share_harness(0, 2, HashMode::FiveTuple);
    let pin_dir = h.dataplane.pin_dir().to_owned();
    let before = h.dataplane.buckets(0, BUCKETS).unwrap();
    std::fs::remove_file(pin_dir.join("prog")).unwrap();
    let reloaded = Dataplane::open(&pin_dir, 0, false).unwrap();
    assert_eq!(reloaded.origin(), Origin::Loaded);
    assert_eq!(reloaded.buckets(0, BUCKETS).unwrap(), before);
    let owners = round_robin(2);
    for i in 0..2000 {
        let (src, src_port) = spread_flow(i);
        let frame = flow(src, src_port, SHARED_IP, 80, SHARED_MAC).encode();
        let bucket = bucket_of(expected_hash(HashMode::FiveTuple, src, src_port), BUCKETS);
        let expected = if owners[bucket as usize] == 0 {
            XDP_PASS
        } else {
            XDP_DROP
        };
        assert_eq!(
            run_program(&reloaded, IFINDEX, &frame).0,
            expected,
            "flow {i}"
        );
        // The program loaded first reads the same tables.
        assert_eq!(h.run(&frame).0, expected, "flow {i}, first program");
    }
}

/// The flow-share tables are one map value read in place by the program; bpftool still names
/// every field of it.
#[test]
fn bpftool_names_the_fields_of_the_flow_share_tables() {
    let h = flow_share_harness(0, 3, HashMode::SrcDst);
    let pin = h.dataplane.pin_dir().join("FWC_FLOW");
    let output = std::process::Command::new("bpftool")
        .args(["-j", "map", "lookup", "pinned"])
        .arg(&pin)
        .args(["key", "0", "0", "0", "0"])
        .output()
        .expect("bpftool");
    assert!(output.status.success(), "{output:?}");
    let found: serde_json::Value = serde_json::from_slice(&output.stdout).expect("bpftool JSON");
    let value = &found["formatted"]["value"];
    let share = &value["shares"][(IFINDEX % MAX_FLOWSHARE_INTERFACES) as usize];
    assert_eq!(share["ifindex"], IFINDEX, "{share}");
    assert_eq!(share["seed"], SEED, "{share}");
    assert_eq!(share["buckets"], BUCKETS, "{share}");
    assert_eq!(share["hash_mode"], HashMode::SrcDst as u8, "{share}");
    assert_eq!(share["lease"], SHARE_SLOT, "{share}");
    let owners: Vec<u64> = value["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .take(BUCKETS as usize)
        .map(|b| b["node"].as_u64().expect("node"))
        .collect();
    let expected: Vec<u64> = round_robin(3).into_iter().map(u64::from).collect();
    assert_eq!(owners, expected);
}

#[test]
fn every_flow_is_passed_by_exactly_one_of_the_nodes() {
    let nodes: Vec<Harness> = (0..3)
        .map(|n| flow_share_harness(n, 3, HashMode::FiveTuple))
        .collect();
    for i in 0..3000u32 {
        let frame = flow(
            client(i),
            1024 + (i % 5000) as u16,
            SHARED_IP,
            443,
            SHARED_MAC,
        )
        .encode();
        let passing = nodes.iter().filter(|h| h.run(&frame).0 == XDP_PASS).count();
        assert_eq!(passing, 1, "flow {i}");
    }
}

#[test]
fn symmetric_modes_keep_both_directions_of_a_flow_on_one_node() {
    // A shared gateway: outside on eth0, inside on eth1, one table and seed for both.
    let lab = Lab::build(
        Topology::default().host(
            HostSpec::new("fw")
                .interface("eth0", "outside", &[])
                .interface("eth1", "inside", &[]),
        ),
    )
    .unwrap();
    let outside = fwcluster_lab::xdp::ifindex(&lab, "fw", "eth0").unwrap();
    let inside = fwcluster_lab::xdp::ifindex(&lab, "fw", "eth1").unwrap();
    let interfaces = [(outside, SHARED_MAC), (inside, SHARED_MAC_INSIDE)];
    // BPF_PROG_TEST_RUN resolves the ingress interface in the caller's namespace.
    fwcluster_lab::in_netns(lab.ns("fw"), move || {
        for mode in [HashMode::SrcDst, HashMode::FiveTuple] {
            let h = flow_share_on(0, 2, mode, &interfaces);
            let server = Ipv4Addr::new(198, 51, 100, 100);
            let mut passed_forward = 0;
            for i in 0..5000u32 {
                let c = client(i);
                let port = 1024 + (i % 60000) as u16;
                let forward = h
                    .run_on(outside, &flow(c, port, server, 80, SHARED_MAC).encode())
                    .0;
                let reverse = h
                    .run_on(
                        inside,
                        &flow(server, 80, c, port, SHARED_MAC_INSIDE).encode(),
                    )
                    .0;
                assert_eq!(forward, reverse, "{mode:?} flow {i}");
                passed_forward += u32::from(forward == XDP_PASS);
            }
            assert!(
                (2000..3000).contains(&passed_forward),
                "{mode:?}: {passed_forward}"
            );
            // The same frame on the other interface's MAC is not flow-shared there.
            let wrong = flow(client(1), 1, server, 2, SHARED_MAC_INSIDE).encode();
            assert_eq!(h.run_on(outside, &wrong), (XDP_PASS, wrong.clone()));
        }
    })
    .unwrap();
}

#[test]
fn two_interfaces_in_one_flow_share_slot_are_refused() {
    let mut h = Harness::new(0);
    h.dataplane
        .set_flowshare(&share(3, SHARED_MAC, HashMode::Src))
        .unwrap();
    let error = h
        .dataplane
        .set_flowshare(&share(3 + 256, SHARED_MAC, HashMode::Src))
        .unwrap_err();
    assert!(
        matches!(
            error,
            DataplaneError::FlowShareSlot {
                ifindex: 259,
                other: 3
            }
        ),
        "{error}"
    );
    // Reconfiguring the same interface is fine.
    h.dataplane
        .set_flowshare(&share(3, SHARED_MAC_INSIDE, HashMode::Src))
        .unwrap();
}

#[test]
fn fragments_of_a_flow_hash_alike_in_five_tuple_mode() {
    let h = flow_share_harness(0, 2, HashMode::FiveTuple);
    for i in 0..2000u32 {
        let mut first = flow(client(i), 5000, SHARED_IP, 53, SHARED_MAC);
        first.flags_fragment = 0x2000; // more fragments, offset 0: ports present
        let mut later = first;
        later.flags_fragment = 0x0010; // offset 128 bytes: no ports in this fragment
        later.src_port = 0xdead;
        later.dst_port = 0xbeef;
        assert_eq!(
            h.run(&first.encode()).0,
            h.run(&later.encode()).0,
            "flow {i}"
        );
    }
}

#[test]
fn flow_share_without_a_fresh_lease_drops_everything() {
    let mut h = flow_share_harness(0, 1, HashMode::Src);
    let frame = flow(client(1), 1, SHARED_IP, 2, SHARED_MAC).encode();
    assert_eq!(h.run(&frame).0, XDP_PASS);
    h.dataplane.release(SHARE_SLOT, 2).unwrap();
    assert_eq!(h.run(&frame).0, XDP_DROP);
    h.dataplane
        .acquire(SHARE_SLOT, 3, Duration::from_millis(10))
        .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(h.run(&frame).0, XDP_DROP);
}

#[test]
fn the_shared_address_is_answered_with_the_shared_mac() {
    let mut h = flow_share_harness(1, 2, HashMode::Src);
    h.dataplane
        .set_addresses([(
            &key(SHARED_IP),
            &entry(SHARE_SLOT, 9, SHARED_MAC, AddressKind::Shared),
        )])
        .unwrap();
    let (action, out) = h.run(&request(SHARED_IP).encode());
    assert_eq!(action, XDP_TX);
    let reply = ArpFrame::decode(&out).unwrap();
    assert_eq!((reply.sha, reply.spa), (SHARED_MAC, SHARED_IP));
    assert_eq!(reply.eth_src, NODE_MAC, "a unicast Ethernet source");
}

/// Collects everything written by a tracing subscriber.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn malformed_frames_are_logged_through_aya_log_into_tracing_when_enabled() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let scratch = Scratch::new().unwrap();
    let dataplane = Dataplane::open(&scratch.pin_dir("node"), 0, true).unwrap();
    let h = Harness {
        dataplane,
        _scratch: scratch,
    };
    let mut log = h.dataplane.kernel_log().unwrap();
    let full = request(OWNED_FIP).encode();
    assert_eq!(h.run(&full[..30]).0, XDP_PASS);
    tracing::subscriber::with_default(subscriber, || log.flush());
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("malformed frame passed: truncated ARP"),
        "{text:?}"
    );
    assert!(text.contains("xdp"), "target is xdp: {text:?}");
}

#[test]
fn malformed_frames_are_not_logged_by_default() {
    let h = Harness::new(0);
    let mut log = h.dataplane.kernel_log().unwrap();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let full = request(OWNED_FIP).encode();
    assert_eq!(h.run(&full[..30]).0, XDP_PASS);
    assert_eq!(h.counters().malformed, 1);
    tracing::subscriber::with_default(subscriber, || log.flush());
    assert!(captured.0.lock().unwrap().is_empty());
}

/// Pins left by a build with other map layouts are refused by name, with the remedy, and left
/// as they are: a map of another size (an older `FWC_LEASES`), and maps stamped with another
/// layout version.
#[test]
fn pins_of_another_build_are_refused_by_name_and_left_alone() {
    let scratch = Scratch::new().unwrap();
    let pin_dir = scratch.pin_dir("node");
    drop(Dataplane::open(&pin_dir, 0, false).unwrap());

    // The lease map as the build before this one made it: 32-byte values (it had a timer's
    // confirmation in each).
    let leases = pin_dir.join("FWC_LEASES");
    std::fs::remove_file(&leases).unwrap();
    let created = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(&leases)
        .args([
            "type",
            "array",
            "key",
            "4",
            "value",
            "32",
            "entries",
            "1024",
            "name",
            "FWC_LEASES",
        ])
        .status()
        .unwrap();
    assert!(created.success());
    let error = Dataplane::open(&pin_dir, 0, false).err().expect("refused");
    let message = error.to_string();
    assert!(
        matches!(error, DataplaneError::IncompatiblePin { ref path, .. } if *path == leases),
        "{message}"
    );
    for part in ["value 24 B", "value 32 B", "clpcfg uninstall"] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    assert!(
        leases.exists() && pin_dir.join("prog").exists(),
        "pins kept"
    );

    // Same sizes, another layout version.
    std::fs::remove_dir_all(&pin_dir).unwrap();
    drop(Dataplane::open(&pin_dir, 0, false).unwrap());
    let mut node: aya::maps::Array<aya::maps::MapData, cluster_common::NodeConfig> =
        aya::maps::Map::from_map_data(
            aya::maps::MapData::from_pin(pin_dir.join("FWC_NODE")).unwrap(),
        )
        .unwrap()
        .try_into()
        .unwrap();
    let stamped = node.get(&0, 0).unwrap();
    assert_eq!(stamped.abi_version, cluster_common::ABI_VERSION);
    node.set(
        0,
        cluster_common::NodeConfig {
            abi_version: cluster_common::ABI_VERSION + 1,
            ..stamped
        },
        0,
    )
    .unwrap();
    let message = Dataplane::open(&pin_dir, 0, false)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        message.contains("FWC_NODE")
            && message.contains(&format!("version {}", cluster_common::ABI_VERSION + 1)),
        "{message}"
    );
    // The version stamp was not overwritten by the refused open.
    assert_eq!(
        node.get(&0, 0).unwrap().abi_version,
        cluster_common::ABI_VERSION + 1
    );
}

// IPv6 Neighbor Discovery (R-V6-1).

fn solicit(target: Ipv6Addr) -> Solicitation {
    Solicitation::multicast(CLIENT_MAC, CLIENT_IP6, target)
}

#[test]
fn an_owned_ipv6_address_is_answered_with_a_correct_advertisement() {
    let h = Harness::new(0);
    let (action, out) = h.run(&solicit(OWNED_FIP6).encode());
    assert_eq!(action, XDP_TX);
    let na = Advertisement::decode(&out).expect("an advertisement with a right checksum");
    assert_eq!(
        na,
        Advertisement {
            dst_mac: CLIENT_MAC,
            src_mac: NODE_MAC,
            vlan: None,
            src: OWNED_FIP6,
            dst: CLIENT_IP6,
            hop_limit: 255,
            flags: SOLICITED | OVERRIDE,
            target: OWNED_FIP6,
            target_mac: Some(NODE_MAC),
            exact_length: true,
        }
    );
    let c = h.counters();
    assert_eq!((c.ns_requests, c.na_sent, c.malformed), (1, 1, 0));
    assert_eq!(h.dataplane.address_replies(10).unwrap(), 1);
    // A proxy address is answered with its own MAC; a gateway's with the Router flag.
    let na = Advertisement::decode(&h.run(&solicit(OWNED_PARP6).encode()).1).unwrap();
    assert_eq!((na.src_mac, na.target_mac), (PARP_MAC, Some(PARP_MAC)));
    let na = Advertisement::decode(&h.run(&solicit(OWNED_GATEWAY6).encode()).1).unwrap();
    assert_eq!(na.flags, ROUTER | SOLICITED | OVERRIDE);
}

#[test]
fn unicast_reachability_probes_and_duplicate_address_detection_are_answered() {
    let h = Harness::new(0);
    // Reachability: to the address itself, answered to the prober.
    let probe = Solicitation::unicast(CLIENT_MAC, CLIENT_IP6, OWNED_FIP6, NODE_MAC);
    let (action, out) = h.run(&probe.encode());
    assert_eq!(action, XDP_TX);
    let na = Advertisement::decode(&out).unwrap();
    assert_eq!(
        (na.dst_mac, na.dst, na.flags),
        (CLIENT_MAC, CLIENT_IP6, SOLICITED | OVERRIDE)
    );
    // Duplicate-address detection from `::` (no source link-layer option, 8 bytes shorter):
    // defended to all nodes, not solicited, the frame grown for the target's option.
    let dad = Solicitation::duplicate_address_detection(CLIENT_MAC, OWNED_FIP6);
    let frame = dad.encode();
    let (action, out) = h.run(&frame);
    assert_eq!(action, XDP_TX);
    assert_eq!(out.len(), frame.len() + 8);
    let na = Advertisement::decode(&out).unwrap();
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    assert_eq!(
        (na.dst_mac, na.dst, na.flags, na.target_mac, na.exact_length),
        (
            [0x33, 0x33, 0, 0, 0, 1],
            all_nodes,
            OVERRIDE,
            Some(NODE_MAC),
            true
        )
    );
    // Trailing bytes after the solicitation are cut off.
    let mut padded = solicit(OWNED_FIP6);
    padded.trailer = vec![0; 20];
    let (action, out) = h.run(&padded.encode());
    assert_eq!(action, XDP_TX);
    assert!(Advertisement::decode(&out).unwrap().exact_length);
    assert_eq!(h.counters().na_sent, 3);
}

#[test]
fn ipv6_cluster_addresses_not_owned_here_are_dropped_and_others_pass() {
    let h = Harness::new(0);
    for target in [RELEASED_FIP6, UNLEASED_FIP6] {
        let frame = solicit(target).encode();
        assert_eq!(h.run(&frame).0, XDP_DROP, "{target}");
    }
    let c = h.counters();
    assert_eq!(c.ns_not_owned + c.ns_lease_expired, 2);
    assert_eq!(c.na_sent, 0);
    // Not a cluster address: the kernel's.
    let other = solicit("2001:db8::99".parse().unwrap()).encode();
    let (action, out) = h.run(&other);
    assert_eq!((action, out), (XDP_PASS, other));
}

#[test]
fn a_vlan_tagged_solicitation_is_answered_with_its_tag_only_for_an_address_of_that_vlan() {
    let mut h = Harness::new(0);
    let vlan_address: Ipv6Addr = "2001:db8:42::10".parse().unwrap();
    h.dataplane
        .set_addresses6([(
            &AddressKey6::new(
                cluster_common::vlan_key_ifindex(IFINDEX, 42),
                vlan_address.octets(),
            ),
            &entry(OWNED_SLOT, 20, NODE_MAC, AddressKind::Fip),
        )])
        .unwrap();
    let tagged = |target, vlan| {
        let mut ns = solicit(target);
        ns.vlan = vlan;
        h.run(&ns.encode())
    };
    let (action, out) = tagged(vlan_address, Some(42));
    assert_eq!(action, XDP_TX);
    assert_eq!(Advertisement::decode(&out).unwrap().vlan, Some(42));
    assert_eq!(tagged(vlan_address, None).0, XDP_PASS);
    assert_eq!(tagged(vlan_address, Some(43)).0, XDP_PASS);
    assert_eq!(tagged(OWNED_FIP6, Some(42)).0, XDP_PASS);
    assert_eq!(tagged(OWNED_FIP6, Some(0)).0, XDP_TX);
}

#[test]
fn invalid_or_truncated_solicitations_pass_untouched_and_count_as_malformed() {
    let h = Harness::new(0);
    // RFC 4861 7.1.1: hop limit 255 and code 0, or the kernel discards it (so does not answer).
    for change in [
        (|ns: &mut Solicitation| ns.hop_limit = 254) as fn(&mut Solicitation),
        |ns| ns.code = 1,
    ] {
        let mut ns = solicit(OWNED_FIP6);
        change(&mut ns);
        let frame = ns.encode();
        let (action, out) = h.run(&frame);
        assert_eq!((action, out), (XDP_PASS, frame));
    }
    assert_eq!(h.counters().malformed, 2);
    for vlan in [None, Some(0)] {
        let mut ns = solicit(OWNED_FIP6);
        ns.vlan = vlan;
        let full = ns.encode();
        let l3 = if vlan.is_some() { 18 } else { 14 };
        // Shorter than the IPv6 header, than the ICMPv6 type, than the solicitation.
        for len in l3..l3 + 40 + 24 {
            let before = h.counters().malformed;
            let (action, out) = h.run(&full[..len]);
            assert_eq!(action, XDP_PASS, "length {len} vlan {vlan:?}");
            assert_eq!(out, &full[..len], "length {len} untouched");
            assert_eq!(h.counters().malformed, before + 1, "length {len} counted");
        }
        // Without its option it is still a solicitation, and answered.
        assert_eq!(h.run(&full[..l3 + 40 + 24]).0, XDP_TX);
    }
    assert_eq!(h.counters().na_sent, 2);
}

#[test]
fn other_icmpv6_and_extension_headers_pass_untouched() {
    let h = Harness::new(0);
    let frame = solicit(OWNED_FIP6).encode();
    // An echo request (type 128) in place of the solicitation.
    let mut echo = frame.clone();
    echo[54] = 128;
    // A hop-by-hop header announced before ICMPv6 (RFC 4861 solicitations carry none).
    let mut extension = frame.clone();
    extension[20] = 0;
    // An advertisement (type 136) from someone else.
    let mut advertisement = frame.clone();
    advertisement[54] = 136;
    for frame in [echo, extension, advertisement] {
        let (action, out) = h.run(&frame);
        assert_eq!((action, out), (XDP_PASS, frame));
    }
    let c = h.counters();
    assert_eq!((c.ns_requests, c.na_sent, c.malformed), (0, 0, 0));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Any solicitation-shaped frame, bytes changed, cut short or lengthened: the program
    /// answers only with a well-formed advertisement for an owned address (right checksum,
    /// exact length), and otherwise leaves the frame untouched.
    #[test]
    fn the_ndp_path_answers_only_right_and_never_corrupts_what_it_passes(
        target in proptest::sample::select(vec![OWNED_FIP6, OWNED_PARP6, RELEASED_FIP6, CLIENT_IP6]),
        dad in proptest::bool::ANY,
        vlan in proptest::option::of(0u16..3),
        flips in proptest::collection::vec((0usize..120, proptest::num::u8::ANY), 0..4),
        cut in proptest::option::of(0usize..120),
        trailer in proptest::collection::vec(proptest::num::u8::ANY, 0..24),
    ) {
        let h = HARNESS.with(|h| h.clone());
        let mut ns = if dad {
            Solicitation::duplicate_address_detection(CLIENT_MAC, target)
        } else {
            solicit(target)
        };
        ns.vlan = vlan;
        ns.trailer = trailer;
        let mut frame = ns.encode();
        for (at, value) in flips {
            if let Some(byte) = frame.get_mut(at) {
                *byte = value;
            }
        }
        if let Some(len) = cut {
            frame.truncate(len.max(14));
        }
        let (action, out) = run_program(&h.dataplane, IFINDEX, &frame);
        match action {
            XDP_TX => {
                let na = Advertisement::decode(&out);
                proptest::prop_assert!(na.is_some(), "an advertisement with a right checksum");
                let na = na.unwrap();
                proptest::prop_assert!(na.exact_length);
                proptest::prop_assert!([OWNED_FIP6, OWNED_PARP6, OWNED_GATEWAY6].contains(&na.target));
                proptest::prop_assert_eq!(na.src, na.target);
                proptest::prop_assert_eq!(na.hop_limit, 255);
            }
            XDP_PASS | XDP_DROP => proptest::prop_assert_eq!(out, frame),
            other => proptest::prop_assert!(false, "action {}", other),
        }
    }
}

thread_local! {
    /// One loaded program for all the property's cases (loading costs milliseconds).
    static HARNESS: std::rc::Rc<Harness> = std::rc::Rc::new(Harness::new(0));
}

thread_local! {
    /// One flow-share program (two nodes, five-tuple) for all the IPv6 property's cases.
    static FLOW_HARNESS: std::rc::Rc<Harness> =
        std::rc::Rc::new(flow_share_harness(0, 2, HashMode::FiveTuple));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Any IPv6 frame to the shared MAC, bytes changed or cut: the program passes it with only
    /// its destination MAC made this node's, drops it, or leaves it untouched; an intact one
    /// gets exactly the verdict the controller's hash predicts.
    #[test]
    fn the_ipv6_flow_share_path_decides_as_predicted_and_never_corrupts_a_frame(
        host in proptest::num::u64::ANY,
        src_port in proptest::num::u16::ANY,
        dst_port in proptest::num::u16::ANY,
        next_header in proptest::sample::select(vec![IPPROTO_TCP, IPPROTO_UDP, 44u8, 58, 0, 132]),
        flips in proptest::collection::vec((0usize..80, proptest::num::u8::ANY), 0..4),
        cut in proptest::option::of(0usize..80),
    ) {
        let h = FLOW_HARNESS.with(|h| h.clone());
        let src = std::net::Ipv6Addr::from((0x2001_0db8_0100_0000_u128 << 64) | u128::from(host));
        let packet = Ipv6Packet {
            eth_dst: SHARED_MAC,
            eth_src: CLIENT_MAC,
            next_header,
            src,
            src_port,
            dst: SHARED_IP6,
            dst_port,
        };
        let intact = packet.encode();
        let mut frame = intact.clone();
        for (at, value) in &flips {
            if let Some(byte) = frame.get_mut(*at) {
                *byte = *value;
            }
        }
        if let Some(len) = cut {
            frame.truncate(len.max(14));
        }
        let (action, out) = run_program(&h.dataplane, IFINDEX, &frame);
        match action {
            XDP_PASS if out != frame => {
                proptest::prop_assert_eq!(&out[0..6], &NODE_MAC[..]);
                proptest::prop_assert_eq!(&out[6..], &frame[6..]);
            }
            XDP_PASS | XDP_DROP => {
                proptest::prop_assert_eq!(&out, &frame);
            }
            other => proptest::prop_assert!(false, "action {}", other),
        }
        if frame == intact {
            // The 5-tuple's ports only where they follow the fixed header.
            let (sp, dp) = if has_ports6(next_header) {
                (src_port.to_be(), dst_port.to_be())
            } else {
                (0, 0)
            };
            let hash = hash_five_tuple(SEED, next_header, folded(src), sp, folded(SHARED_IP6), dp);
            let expected = if round_robin(2)[bucket_of(hash, BUCKETS) as usize] == 0 {
                XDP_PASS
            } else {
                XDP_DROP
            };
            proptest::prop_assert_eq!(action, expected);
        }
    }
}

fn has_ports6(next_header: u8) -> bool {
    matches!(next_header, IPPROTO_TCP | IPPROTO_UDP | 132)
}
