//! Arbitrary bytes into the heartbeat decoder, with and without a valid tag (so the parser
//! behind the authentication is reached too).
#![no_main]

use cluster_ctl::heartbeat::wire::{self, Key, TAG_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = Key::new(b"fuzzing key, 16+ bytes".to_vec()).unwrap();
    let _ = wire::decode(data, &key);
    // The same bytes, correctly signed: the body parser sees attacker-chosen bytes.
    let mut signed = data.to_vec();
    let tag = key.tag(&signed);
    signed.extend_from_slice(&tag[..TAG_LEN]);
    let _ = wire::decode(&signed, &key);
    let _ = wire::decode_report(data);
});
