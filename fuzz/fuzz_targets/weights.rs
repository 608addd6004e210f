//! A plaintext model's safetensors file, for the `small` preset's manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = mpcvit_server::cli::preset_config("small").expect("preset");
    let _ = model::Model::from_safetensors(config, data);
});
