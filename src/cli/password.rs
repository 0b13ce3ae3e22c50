//! `popsync password set|delete --account NAME` (or `--imap NAME`): an account's password,
//! or an IMAP destination's, in the system's credential store (for `password-keyring = true`).

use crate::exit;
use std::io::{BufRead, IsTerminal};

use super::Cli;
use super::whose::{WhoseArgs, whose};
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
        #[command(flatten)]
        whose: WhoseArgs,
    },
    /// Remove the stored password
    Delete {
        #[command(flatten)]
        whose: WhoseArgs,
    },
}

pub fn run(cli: &Cli, args: &PasswordArgs) -> u8 {
    let config = match cli.load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (Action::Set { whose: named } | Action::Delete { whose: named }) = &args.action;
    let who = match whose(&config, named) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let uses_keyring = matches!(
        who.login.password,
        crate::config::secret::PasswordSource::Keyring { .. }
    );
    match &args.action {
        Action::Set { .. } => {
            let secret = match read_secret(&who.label, &who.login.username, who.host) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("popsync: {e}");
                    return exit::USAGE;
                }
            };
            match runtime.block_on(keyring::set(&who.key, secret)) {
                Ok(()) => {
                    if !cli.quiet {
                        println!("stored the password of {} in the system keyring", who.label);
                    }
                    if !uses_keyring {
                        eprintln!(
                            "popsync: note: {} does not use it yet: put \
                             `password-keyring = true` in its section (instead of password or \
                             password-command)",
                            who.label
                        );
                    } else {
                        try_again_now(cli, &config.state_dir, &who.accounts);
                    }
                    0
                }
                Err(e) => fail(&e),
            }
        }
        Action::Delete { .. } => match runtime.block_on(keyring::delete(&who.key)) {
            Ok(removed) => {
                if !cli.quiet {
                    if removed {
                        println!(
                            "removed the password of {} from the system keyring",
                            who.label
                        );
                    } else {
                        println!("the system keyring held no password for {}", who.label);
                    }
                }
                0
            }
            Err(e) => fail(&e),
        },
    }
}

/// A new password or sign-in: accounts paused after a refused login are tried again — now, if the
/// agent runs (as `popsync poll --account` would ask), else by the next `fetch` or start.
pub(super) fn try_again_now(cli: &Cli, state_dir: &std::path::Path, names: &[String]) {
    // (An empty list would ask the daemon to poll every account.)
    if names.is_empty() {
        return;
    }
    if let Ok(mut store) = crate::store::Store::open(state_dir) {
        for name in names {
            if let Ok(Some(id)) = store.find_account(name)
                && let Ok(Some(_)) = store.pause(id)
            {
                let _ = store.set_pause(id, None);
            }
        }
    }
    if let Ok(info) = crate::daemon::control::request_poll(state_dir, names)
        && !cli.quiet
    {
        println!(
            "asked the daemon (process {}) to poll {} now",
            info.pid,
            names.join(", ")
        );
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
fn read_secret(whose: &str, username: &str, host: &str) -> Result<Secret, String> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first =
            rpassword::prompt_password(format!("Password of {username} at {host} ({whose}): "))
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
