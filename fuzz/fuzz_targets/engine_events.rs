//! Arbitrary authenticated events (peer reports with any indices and values, local events for
//! steps and IPW entries that do not exist, operator commands) against the engine: it must not
//! panic, whatever a key holder sends.
#![no_main]

use cluster_engine::arbitrary;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&me, rest)) = data.split_first() else {
        return;
    };
    let _ = arbitrary::run(usize::from(me % 3), rest);
});
