//! The heartbeat codec: authentication first, replay protection, versions, bounds.

use cluster_ctl::heartbeat::wire::{
    self, HEADER_LEN, Key, Kind, MAX_PACKET, Packet, Reject, ReplayWindow, TAG_LEN,
};
use cluster_engine::{Claim, GroupReport, GroupState, Handoff, HeldGroup, Instant, Report};
use proptest::prelude::*;
use std::time::Duration;

fn key() -> Key {
    Key::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
}

fn report() -> Report {
    Report {
        // Travels in the header: the packet's incarnation.
        incarnation: 1_700_000_000_000_000_000,
        sent_at: Instant::from_nanos(1_234_567_890),
        echo: Some(Instant::from_nanos(987_654_321)),
        hold: Duration::from_secs(5),
        granted: Duration::from_millis(2_500),
        ready: true,
        links_heard: 0b11,
        groups: vec![
            GroupReport {
                state: GroupState::Online,
                epoch: 7,
                deny: false,
                healthy: true,
                claim: None,
                ack: Some((1, 9)),
                handoff: None,
                admin_epoch: 2,
                wanted: true,
                errors: 0,
            },
            GroupReport {
                state: GroupState::Offline,
                epoch: 3,
                deny: true,
                healthy: false,
                claim: Some(Claim {
                    epoch: 4,
                    forced: true,
                }),
                ack: None,
                handoff: Some(Handoff {
                    to: 1,
                    manual: true,
                    failover: false,
                }),
                admin_epoch: 0,
                wanted: false,
                errors: 1 << 31 | 2,
            },
        ],
        held: vec![HeldGroup {
            id: 0x1234_5678,
            epoch: 7,
        }],
    }
}

fn packet() -> Packet {
    Packet {
        version: wire::VERSION,
        kind: Kind::Heartbeat,
        sender: 1,
        incarnation: 1_700_000_000_000_000_000,
        sequence: 42,
        digest: [9; 16],
        link: 1,
        report: report(),
    }
}

#[test]
fn a_packet_round_trips() {
    let bytes = wire::encode(&packet(), &key());
    assert_eq!(wire::decode(&bytes, &key()), Ok(packet()));
    let mut leaving = packet();
    leaving.kind = Kind::Leaving;
    let bytes = wire::encode(&leaving, &key());
    assert_eq!(wire::decode(&bytes, &key()).unwrap().kind, Kind::Leaving);
}

#[test]
fn a_forged_tag_or_a_wrong_key_is_refused() {
    let mut bytes = wire::encode(&packet(), &key()).to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(wire::decode(&bytes, &key()), Err(Reject::BadTag));
    let other = Key::new(b"another key of 16+ bytes".to_vec()).unwrap();
    let bytes = wire::encode(&packet(), &other);
    assert_eq!(wire::decode(&bytes, &key()), Err(Reject::BadTag));
    // Any changed byte of the signed part is caught.
    let good = wire::encode(&packet(), &key()).to_vec();
    for i in 0..good.len() - TAG_LEN {
        let mut bytes = good.clone();
        bytes[i] ^= 0x80;
        assert_eq!(
            wire::decode(&bytes, &key()),
            Err(Reject::BadTag),
            "byte {i}"
        );
    }
}

#[test]
fn short_keys_are_refused() {
    assert!(Key::new(b"too short".to_vec()).is_err());
}

#[test]
fn truncated_and_oversized_packets_are_refused() {
    let bytes = wire::encode(&packet(), &key());
    for len in 0..HEADER_LEN + TAG_LEN {
        assert_eq!(wire::decode(&bytes[..len], &key()), Err(Reject::TooShort));
    }
    for len in HEADER_LEN + TAG_LEN..bytes.len() {
        assert_eq!(
            wire::decode(&bytes[..len], &key()),
            Err(Reject::BadTag),
            "length {len}"
        );
    }
    let huge = vec![0u8; MAX_PACKET + 1];
    assert_eq!(wire::decode(&huge, &key()), Err(Reject::TooLong));
}

/// Re-signs `bytes` after editing the signed part, as a peer with the key could.
fn resign(mut bytes: Vec<u8>) -> Vec<u8> {
    let signed = bytes.len() - TAG_LEN;
    let tag = key().tag(&bytes[..signed]);
    bytes[signed..].copy_from_slice(&tag);
    bytes
}

/// Another release's packet is read as far as every version keeps the layout: alive, with
/// the echo and the holds that bound the leases; its groups are not read.
#[test]
fn another_versions_packet_is_read_as_far_as_the_lasting_beginning() {
    for version in [wire::VERSION + 1, 200] {
        let mut newer = packet();
        newer.version = version;
        let decoded = wire::decode(&wire::encode(&newer, &key()), &key()).unwrap();
        assert_eq!(decoded.version, version);
        assert_eq!((decoded.sender, decoded.sequence), (1, 42));
        let report = report();
        assert_eq!(decoded.report.sent_at, report.sent_at);
        assert_eq!(decoded.report.echo, report.echo);
        assert_eq!(decoded.report.hold, report.hold);
        assert_eq!(decoded.report.granted, report.granted);
        assert!(decoded.report.groups.is_empty() && decoded.report.held.is_empty());
    }
    // Version 2 (before the restart hold): send time and echo only.
    let mut older = wire::encode(&packet(), &key()).to_vec();
    older[4] = 2;
    let decoded = wire::decode(&resign(older), &key()).unwrap();
    assert_eq!(decoded.version, 2);
    assert_eq!(decoded.report.echo, report().echo);
    assert_eq!(decoded.report.hold, Duration::ZERO);
    // Before version 2 there was no echo: refused, and said so.
    let mut ancient = wire::encode(&packet(), &key()).to_vec();
    ancient[4] = 1;
    let error = wire::decode(&resign(ancient), &key()).unwrap_err();
    assert_eq!(error, Reject::UnsupportedVersion(1));
}

#[test]
fn authenticated_but_malformed_packets_are_refused() {
    let good = wire::encode(&packet(), &key()).to_vec();
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    assert_eq!(
        wire::decode(&resign(bad_magic), &key()),
        Err(Reject::BadMagic)
    );
    let mut bad_kind = good.clone();
    bad_kind[5] = 9;
    assert_eq!(
        wire::decode(&resign(bad_kind), &key()),
        Err(Reject::BadKind)
    );
    let mut bad_length = good.clone();
    bad_length[7] ^= 1;
    assert_eq!(
        wire::decode(&resign(bad_length), &key()),
        Err(Reject::BadLength)
    );
    let mut bad_state = good.clone();
    // After sent_at and echo (16), the holds (8), ready (1), links (4) and the group count (2).
    bad_state[HEADER_LEN + 31] = 99;
    assert_eq!(
        wire::decode(&resign(bad_state), &key()),
        Err(Reject::BadBody)
    );
}

#[test]
fn replays_and_old_incarnations_are_refused() {
    let mut window = ReplayWindow::default();
    assert_eq!(window.accept(10, 5), Ok(()));
    assert_eq!(window.accept(10, 5), Err(Reject::Replay));
    // Reordering across links within the window is fine, once.
    assert_eq!(window.accept(10, 7), Ok(()));
    assert_eq!(window.accept(10, 6), Ok(()));
    assert_eq!(window.accept(10, 6), Err(Reject::Replay));
    // Far behind the window.
    assert_eq!(window.accept(10, 200), Ok(()));
    assert_eq!(window.accept(10, 100), Err(Reject::Replay));
    // An older incarnation (a recording of the previous boot) is refused…
    assert_eq!(window.accept(9, 1_000), Err(Reject::OldIncarnation));
    // …a newer one (the peer rebooted) starts over…
    assert_eq!(window.accept(11, 0), Ok(()));
    assert_eq!(window.incarnation(), 11);
    // …and an older one is never accepted again, however long the peer was silent.
    assert_eq!(window.accept(3, 0), Err(Reject::OldIncarnation));
    // A window restored from the record of a restarted receiver refuses older lives too.
    let mut restored = ReplayWindow::remembering(11);
    assert_eq!(restored.accept(10, 9_999), Err(Reject::OldIncarnation));
    assert_eq!(restored.accept(11, 0), Ok(()));
}

#[test]
fn the_config_digest_travels_in_the_header() {
    let mut other = packet();
    other.digest = [1; 16];
    let bytes = wire::encode(&other, &key());
    assert_eq!(wire::decode(&bytes, &key()).unwrap().digest, [1; 16]);
}

proptest! {
    #[test]
    fn the_decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = wire::decode(&bytes, &key());
    }

    #[test]
    fn the_body_decoder_never_panics_on_authenticated_garbage(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = wire::encode(&packet(), &key()).to_vec();
        bytes.truncate(HEADER_LEN);
        bytes[6..8].copy_from_slice(&(body.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&[0; TAG_LEN]);
        let bytes = resign(bytes);
        let _ = wire::decode(&bytes, &key());
    }

    #[test]
    fn reports_round_trip(states in proptest::collection::vec((0u8..5, any::<u64>(), any::<bool>(), any::<bool>(), any::<u32>()), 0..40), sent_at in any::<u64>(), echo in proptest::option::of(1u64..), hold_us in any::<u32>(), granted_us in any::<u32>()) {
        let groups = states.iter().map(|(s, epoch, deny, forced, errors)| GroupReport {
            state: GroupState::from_code(*s).unwrap(),
            epoch: *epoch,
            deny: *deny,
            healthy: !deny,
            claim: forced.then_some(Claim { epoch: epoch.wrapping_add(1), forced: *forced }),
            ack: None,
            handoff: None,
            admin_epoch: 0,
            wanted: true,
            errors: *errors,
        }).collect();
        let mut p = packet();
        p.report = Report { incarnation: p.incarnation, sent_at: Instant::from_nanos(sent_at), echo: echo.map(Instant::from_nanos), hold: Duration::from_micros(hold_us.into()), granted: Duration::from_micros(granted_us.into()), ready: false, links_heard: 1, groups, held: vec![HeldGroup { id: 7, epoch: 9 }] };
        let bytes = wire::encode(&p, &key());
        prop_assert_eq!(wire::decode(&bytes, &key()), Ok(p));
    }
}
