//! `popsync poll`: ask the running daemon to poll now.

use super::Cli;
use crate::daemon::control;
use crate::exit;

/// Ask the running daemon to poll every account (or the ones named) now
#[derive(Debug, clap::Args)]
pub struct PollArgs {
    /// Only this account (repeat for several)
    #[arg(long, short, value_name = "NAME")]
    account: Vec<String>,
}

pub fn run(cli: &Cli, args: &PollArgs) -> u8 {
    let config = match cli.load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(code) = super::select(&config, &args.account) {
        return code;
    }
    match control::request_poll(&config.state_dir, &args.account) {
        Ok(info) => {
            if !cli.quiet {
                let what = if args.account.is_empty() {
                    "every account".to_owned()
                } else {
                    args.account.join(", ")
                };
                println!("asked the daemon (process {}) to poll {what} now", info.pid);
            }
            0
        }
        Err(e @ control::ControlError::NotRunning(_)) => {
            eprintln!("popsync: {e}; `popsync fetch` fetches without one");
            exit::USAGE
        }
        Err(e) => {
            eprintln!("popsync: {}", crate::error_chain(&e));
            exit::IO_ERROR
        }
    }
}
