//! `mpcvit-server --party 0|1 ...`, `mpcvit-server dealer`, `split`, `certs`, `health`,
//! `stamp`, `web-token`.

use clap::Parser;
use mpcvit_server::cli::{
    Cli, Command, finish, run_certs, run_dealer, run_health, run_party, run_split, run_stamp,
    run_web_token, runtime,
};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Split(a)) => run_split(a),
        Some(Command::Stamp(a)) => run_stamp(a),
        Some(Command::Certs(a)) => run_certs(a),
        Some(Command::Dealer(a)) => on_runtime(run_dealer(a)),
        Some(Command::Health(a)) => on_runtime(run_health(a)),
        Some(Command::WebToken(a)) => run_web_token(a),
        None => on_runtime(run_party(cli.party)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mpcvit-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn on_runtime<T>(f: impl Future<Output = T>) -> T {
    let rt = runtime();
    let r = rt.block_on(f);
    finish(rt);
    r
}
