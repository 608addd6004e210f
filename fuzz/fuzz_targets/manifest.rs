//! Manifest parsing (public, but read from files and from the other party).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(config) = model::ModelConfig::from_manifest_json(text)
    {
        // A parsed manifest serialises and parses back to the same config.
        let again = config.to_manifest_json().expect("serialise");
        let back = model::ModelConfig::from_manifest_json(&again).expect("round trip");
        assert_eq!(back.to_manifest_json().expect("serialise"), again);
    }
});
