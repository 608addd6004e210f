//! Image decoding and preprocessing (what the client does with a file):
//! any bytes give an input of the model's length or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = mpcvit_server::cli::preset_config("small").expect("preset");
    if let Ok(input) = model::preprocess(&config, data) {
        assert_eq!(input.len(), config.input_len());
    }
});
