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
    let rt = mpcvit_server::cli::runtime();
    let result = rt.block_on(run_dealer(cli.dealer));
    mpcvit_server::cli::finish(rt);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mpcvit-dealer: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
