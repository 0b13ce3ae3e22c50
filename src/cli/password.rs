//! `popsync password set|delete --account NAME`: the account's password in the system's
//! credential store (for `password-keyring = true`).

use crate::exit;
use std::io::{BufRead, IsTerminal};

use super::Cli;
use crate::config::keyring::{self, KeyringError};
use crate::pop3::Secret;

/// Store or remove an account's password in the system keyring (for password-keyring = true)
#[derive(Debug, clap::Args)]
pub struct PasswordArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Store the password: asked for without echo on a terminal, else the first line of
    /// standard input (e.g. `pass show mail/home | popsync password set --account home`)
    Set {
        /// The account (its name in the configuration)
        #[arg(long, short, value_name = "NAME")]
        account: String,
    },
    /// Remove the stored password
    Delete {
        /// The account (its name in the configuration)
        #[arg(long, short, value_name = "NAME")]
        account: String,
    },
}

pub fn run(cli: &Cli, args: &PasswordArgs) -> u8 {
    let config = match cli.load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let name = match &args.action {
        Action::Set { account } | Action::Delete { account } => account,
    };
    let account = match super::select(&config, std::slice::from_ref(name)) {
        Ok(a) => a[0],
        Err(code) => return code,
    };
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let uses_keyring = matches!(
        account.login.password,
        crate::config::secret::PasswordSource::Keyring { .. }
    );
    match &args.action {
        Action::Set { .. } => {
            let secret =
                match read_secret(&account.name, &account.login.username, &account.server.host) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("popsync: {e}");
                        return exit::USAGE;
                    }
                };
            match runtime.block_on(keyring::set(&account.name, secret)) {
                Ok(()) => {
                    if !cli.quiet {
                        println!(
                            "stored the password of account {:?} in the system keyring",
                            account.name
                        );
                    }
                    if !uses_keyring {
                        eprintln!(
                            "popsync: note: account {:?} does not use it yet: put \
                             `password-keyring = true` in its section (instead of password or \
                             password-command)",
                            account.name
                        );
                    } else {
                        try_again_now(cli, &config.state_dir, &account.name);
                    }
                    0
                }
                Err(e) => fail(&e),
            }
        }
        Action::Delete { .. } => match runtime.block_on(keyring::delete(&account.name)) {
            Ok(removed) => {
                if !cli.quiet {
                    if removed {
                        println!(
                            "removed the password of account {:?} from the system keyring",
                            account.name
                        );
                    } else {
                        println!(
                            "the system keyring held no password for account {:?}",
                            account.name
                        );
                    }
                }
                0
            }
            Err(e) => fail(&e),
        },
    }
}

/// A new password: an account paused after a refused login is tried again — now, if the
/// agent runs (as `popsync poll --account` would ask), else by the next `fetch` or start.
pub(super) fn try_again_now(cli: &Cli, state_dir: &std::path::Path, name: &str) {
    if let Ok(mut store) = crate::store::Store::open(state_dir)
        && let Ok(Some(id)) = store.find_account(name)
        && let Ok(Some(_)) = store.pause(id)
    {
        let _ = store.set_pause(id, None);
    }
    if let Ok(info) = crate::daemon::control::request_poll(state_dir, &[name.to_owned()])
        && !cli.quiet
    {
        println!("asked the daemon (process {}) to poll {name} now", info.pid);
    }
}

fn fail(e: &KeyringError) -> u8 {
    eprintln!("popsync: the system keyring: {e}");
    match e {
        KeyringError::Unavailable { .. } | KeyringError::Timeout(_) => exit::TEMPORARY,
        _ => exit::IO_ERROR,
    }
}

/// The password: from a prompt without echo (asked twice) on a terminal, else the first line
/// of standard input.
fn read_secret(account: &str, username: &str, host: &str) -> Result<Secret, String> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = rpassword::prompt_password(format!(
            "Password of {username} at {host} (account {account}): "
        ))
        .map_err(|e| format!("cannot read the password: {e}"))?;
        let again = rpassword::prompt_password("The same again: ")
            .map_err(|e| format!("cannot read the password: {e}"))?;
        if first != again {
            return Err("the two entries differ; nothing was stored".into());
        }
        first
    } else {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    if password.is_empty() {
        return Err("the password is empty; nothing was stored".into());
    }
    if password.chars().any(|c| c == '\0') {
        return Err("the password contains NUL; nothing was stored".into());
    }
    Ok(Secret::new(password))
}
