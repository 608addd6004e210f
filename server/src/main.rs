//! `mpcvit-server --party 0|1 ...`, `mpcvit-server dealer`, `split`, `certs`, `health`.

use clap::Parser;
use mpcvit_server::cli::{Cli, Command, run_certs, run_dealer, run_health, run_party, run_split};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Split(a)) => run_split(a),
        Some(Command::Certs(a)) => run_certs(a),
        Some(Command::Dealer(a)) => runtime().block_on(run_dealer(a)),
        Some(Command::Health(a)) => runtime().block_on(run_health(a)),
        None => runtime().block_on(run_party(cli.party)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mpcvit-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
