//! The engine takes whatever an authenticated peer, a monitor or an operator sends: arbitrary
//! reports (indices out of range, any group count, any echo), events for steps and IPW entries
//! that do not exist, and commands naming unknown groups or nodes, without panicking.

use cluster_engine::arbitrary;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_events_never_crash_the_engine(data in proptest::collection::vec(any::<u8>(), 0..2_000), me in 0usize..3) {
        let _ = arbitrary::run(me, &data);
    }
}

#[test]
fn a_handoff_to_a_node_that_does_not_exist_is_ignored() {
    // From fws2 (index 1): group0 offline, handed to node 200.
    let mut data = Vec::new();
    for _ in 0..40 {
        // A heartbeat from node 1 on link 0 with two groups, each handed to node 0xc8 >> …
        data.extend_from_slice(&[3, 4, 1, 0, 2]);
        data.extend_from_slice(&0u64.to_be_bytes()); // echo: none
        data.extend_from_slice(&1u64.to_be_bytes()); // sent_at
        data.push(3); // links heard
        for _ in 0..2 {
            data.extend_from_slice(&[0b0010_0000 | 0x19, 0]);
            data.extend_from_slice(&1u64.to_be_bytes());
        }
        data.push(0); // holds nothing by name
        data.extend_from_slice(&[0, 10]); // a tick
    }
    let engine = arbitrary::run(0, &data);
    // It ran (no panic) and still knows its peer.
    assert!(engine.is_online(1));
}
