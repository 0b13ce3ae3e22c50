//! The command line: one file per subcommand; this file holds the shared options and what
//! every command needs (the configuration, its runtime). Exit statuses are in `exit`.

mod check;
mod daemon;
mod fetch;
mod generate;
mod log;
mod oauth2;
mod password;
mod poll;
mod progress;
mod service;
mod show_config;
mod status;
mod whose;

use crate::exit;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, ConfigError};

pub use progress::TerminalProgress;

#[derive(Debug, Parser)]
#[command(
    name = "popsync",
    version,
    about = "Fetch mail from POP3 servers into a Maildir, an mbox or an MDA, exactly once",
    long_about = "popsync downloads new messages from POP3 accounts into local Maildirs or mbox \
files, or hands them to an MDA such as procmail. \
It remembers what it has downloaded (by the server's unique-ids, in a state database), so each \
message arrives exactly once, even if popsync is killed part-way; it deletes messages from the \
server only after they are safely on disk, and only if the account's retention says so.",
    after_help = "Configuration: --config FILE, else $POPSYNC_CONFIG, else the platform's config \
directory (~/.config/popsync/config.toml on Linux). config.example.toml explains every key.

Exit status:
  0   success
  64  usage error (such as an unknown account name)
  74  local I/O error (the mailbox or the state database)
  75  temporary failure (network, busy server): try again later
  77  login refused, or the server's certificate not trusted
  78  configuration error, or a server that cannot be used as configured"
)]
pub struct Cli {
    /// Configuration file
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log more: -v what happens, -vv details, -vvv the protocol transcript (secrets redacted)
    #[arg(long, short = 'v', action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Print nothing but errors
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose")]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Fetch(fetch::FetchArgs),
    Check(check::CheckArgs),
    Config(show_config::ConfigArgs),
    Daemon(daemon::DaemonArgs),
    Poll(poll::PollArgs),
    Status(status::StatusArgs),
    Password(password::PasswordArgs),
    #[command(name = "oauth2")]
    OAuth2(oauth2::OAuth2Args),
    Service(service::ServiceArgs),
    Generate(generate::GenerateArgs),
    /// The names of the configured accounts, one a line (for shell completion)
    #[command(hide = true)]
    CompleteAccounts,
}

/// Parses the command line, runs the subcommand and returns its exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(exit::USAGE),
            };
        }
    };
    // The daemon sets up logging itself, once it knows the configured level.
    if !matches!(cli.command, Command::Daemon(_)) {
        log::init(cli.verbose, cli.quiet, "warn", false);
    }
    let code = match &cli.command {
        Command::Fetch(args) => fetch::run(&cli, args),
        Command::Check(args) => check::run(&cli, args),
        Command::Config(args) => show_config::run(&cli, args),
        Command::Daemon(args) => daemon::run(&cli, args),
        Command::Poll(args) => poll::run(&cli, args),
        Command::Status(args) => status::run(&cli, args),
        Command::Password(args) => password::run(&cli, args),
        Command::OAuth2(args) => oauth2::run(&cli, args),
        Command::Service(args) => service::run(&cli, args),
        Command::Generate(args) => generate::run(&cli, args),
        Command::CompleteAccounts => generate::account_names(&cli),
    };
    ExitCode::from(code)
}

impl Cli {
    /// The configuration file in use (`--config`, `$POPSYNC_CONFIG` or the platform's), or
    /// the exit status after saying why there is none.
    fn config_file(&self) -> Result<PathBuf, u8> {
        config::config_path(self.config.as_deref()).map_err(|e| {
            eprintln!("popsync: {e}");
            exit::CONFIG
        })
    }

    /// Loads the configuration, printing every problem if it cannot be used.
    fn load_config(&self) -> Result<Config, u8> {
        let path = self.config_file()?;
        match Config::load(&path, state_override()) {
            Ok(c) => Ok(c),
            Err(e @ ConfigError::Read { .. }) | Err(e @ ConfigError::Invalid(_)) => {
                eprintln!("popsync: {e}");
                Err(exit::CONFIG)
            }
        }
    }
}

/// The accounts named on the command line (all if none), or the usage status after saying
/// which name is unknown.
fn select<'c>(config: &'c Config, names: &[String]) -> Result<Vec<&'c crate::config::Account>, u8> {
    config.select(names).map_err(|e| {
        eprintln!("popsync: {e}");
        exit::USAGE
    })
}

/// A single-threaded async runtime for one command, or the exit status after saying why
/// there is none.
fn runtime() -> Result<tokio::runtime::Runtime, u8> {
    crate::poll::runtime().map_err(|e| {
        eprintln!("popsync: {}", crate::error_chain(&e));
        e.class().exit_code()
    })
}

/// `$POPSYNC_STATE_DIR`, if set.
fn state_override() -> Option<PathBuf> {
    std::env::var_os(config::STATE_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}
