//! Arbitrary text as a configuration file: errors, never panics.
#![no_main]

use cluster_ctl::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = Config::parse(std::path::Path::new("fuzz.toml"), text) {
            // A valid configuration normalizes to one that is valid and equal.
            let normalized = config.normalized();
            let again = Config::parse(std::path::Path::new("fuzz.toml"), &normalized).unwrap();
            assert_eq!(again, config);
        }
    }
});
