//! Plaintext inference from the command line:
//!
//! ```text
//! cargo run --release -p model --example predict -- MODEL_DIR IMAGE.png [--logits]
//! ```
//!
//! `MODEL_DIR` holds `manifest.json` and `model.safetensors` (for instance written by
//! `model/scripts/convert_checkpoint.py`). Prints the top-5 classes, or every logit with
//! `--logits`.

use std::path::Path;
use std::process::ExitCode;

use model::{Model, preprocess};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: predict MODEL_DIR IMAGE [--logits]");
        return ExitCode::from(2);
    }
    match run(
        Path::new(&args[0]),
        Path::new(&args[1]),
        args.iter().any(|a| a == "--logits"),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("predict: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &Path, image: &Path, all: bool) -> Result<(), Box<dyn std::error::Error>> {
    let model = Model::load_dir(dir)?;
    let bytes = std::fs::read(image).map_err(|e| format!("{}: {e}", image.display()))?;
    let input = preprocess(model.config(), &bytes)?;
    let logits = model.forward(&input)?;
    if all {
        for (i, v) in logits.iter().enumerate() {
            println!("{i} {v:.7}");
        }
        return Ok(());
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    for &i in order.iter().take(5) {
        let label = model.config().labels.get(i).map_or("", String::as_str);
        println!("{i:>4} {:>10.4} {label}", logits[i]);
    }
    Ok(())
}
