//! A party's weight share file (`share-<p>.safetensors`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mpcvit_server::shares::from_safetensors(data);
});
