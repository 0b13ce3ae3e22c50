//! `popsync daemon`: the background agent.

use super::Cli;
use crate::exit;

/// Run in the background: poll every account on its schedule, notify about new mail and
/// problems, answer to signals (SIGHUP reloads the configuration, SIGUSR1 polls now,
/// SIGTERM stops)
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {}

pub fn run(cli: &Cli, _args: &DaemonArgs) -> u8 {
    let config = match cli.load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    super::log::init(
        cli.verbose,
        cli.quiet,
        config.log_level.as_deref().unwrap_or("info"),
        true,
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("popsync: cannot start the async runtime: {e}");
            return exit::IO_ERROR;
        }
    };
    let result = runtime.block_on(crate::daemon::run(config, super::state_override()));
    // A fetch still running after the stop's grace period is left behind (killing it is
    // safe); dropping the runtime would wait for its thread, for ever if it is stuck.
    runtime.shutdown_background();
    match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{}", crate::error_chain(&e));
            eprintln!("popsync: {}", crate::error_chain(&e));
            match e {
                crate::daemon::DaemonError::Control(
                    crate::daemon::control::ControlError::AlreadyRunning { .. },
                ) => exit::TEMPORARY,
                _ => exit::IO_ERROR,
            }
        }
    }
}
