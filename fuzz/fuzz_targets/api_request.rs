//! Arbitrary bytes as a control-socket / peer-API request line.
#![no_main]

use cluster_ctl::control::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<Request>(data) {
        // What parses must serialize back.
        let again = serde_json::to_vec(&request).unwrap();
        assert_eq!(serde_json::from_slice::<Request>(&again).unwrap(), request);
    }
});
