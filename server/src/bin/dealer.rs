//! `mpcvit-dealer`: the dealer of correlated randomness (same as `mpcvit-server dealer`).

use clap::Parser;
use mpcvit_server::cli::{DealerArgs, run_dealer};

/// The dealer of correlated randomness for mpcvit's two parties.
#[derive(Debug, Parser)]
#[command(name = "mpcvit-dealer", version)]
struct Cli {
    #[command(flatten)]
    dealer: DealerArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run_dealer(cli.dealer)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mpcvit-dealer: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
