//! `popsync oauth2 login|status|logout`: the built-in OAuth2 sign-in of accounts with
//! `oauth2-provider`.

use super::Cli;
use super::whose::{Whose, WhoseArgs, whose};
use crate::config::{Config, Login, PasswordSource};
use crate::exit;
use crate::oauth2::{self, Settings};

/// Sign accounts in with OAuth2 (for oauth2-provider), see whether they are, sign them out
#[derive(Debug, clap::Args)]
pub struct OAuth2Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Sign the account (or IMAP destination) in: approve popsync's access once, in the
    /// browser (opened for you where one can be; the address is always shown), or with
    /// --device (not for Google)
    Login {
        #[command(flatten)]
        whose: WhoseArgs,
        /// Sign in with a code typed in on any device's browser (for a machine without one)
        #[arg(long)]
        device: bool,
        /// Do not open a browser: only show the address to open, in a browser here or
        /// anywhere (from another machine, paste back the address it ends at)
        #[arg(long, conflicts_with = "device")]
        no_browser: bool,
    },
    /// Whether each account and IMAP destination with oauth2-provider is signed in, and
    /// where its token is kept
    Status {
        /// Only this account (repeatable)
        #[arg(long, short, value_name = "NAME")]
        account: Vec<String>,
    },
    /// Sign the account (or IMAP destination) out: the stored refresh token is removed
    Logout {
        #[command(flatten)]
        whose: WhoseArgs,
    },
}

fn settings(login: &Login) -> Option<&Settings> {
    match &login.password {
        PasswordSource::OAuth2(s) => Some(s),
        _ => None,
    }
}

fn one<'c>(config: &'c Config, named: &WhoseArgs) -> Result<(Whose<'c>, &'c Settings), u8> {
    let who = whose(config, named)?;
    match settings(who.login) {
        Some(s) => Ok((who, s)),
        None => {
            eprintln!(
                "popsync: {} does not sign in with OAuth2: set oauth2-provider \
                 (and oauth2-client-id) in its section of {}",
                who.label,
                config.file.display()
            );
            Err(exit::USAGE)
        }
    }
}

pub fn run(cli: &Cli, args: &OAuth2Args) -> u8 {
    let config = match cli.load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match &args.action {
        Action::Login {
            whose: named,
            device,
            no_browser,
        } => {
            let (who, settings) = match one(&config, named) {
                Ok(x) => x,
                Err(code) => return code,
            };
            let login = async {
                if *device {
                    device_login(settings).await
                } else {
                    browser_login(settings, !no_browser).await
                }
            };
            match runtime.block_on(login) {
                Ok(()) => {
                    println!(
                        "signed in: {} can now {}; its refresh token is kept in {}",
                        who.label,
                        if named.imap.is_some() {
                            "take mail"
                        } else {
                            "fetch mail"
                        },
                        settings.store.describe(&who.key)
                    );
                    super::password::try_again_now(cli, &config.state_dir, &who.accounts);
                    0
                }
                Err(e) => {
                    eprintln!("popsync: {}: {e}", who.label);
                    e.class().exit_code()
                }
            }
        }
        Action::Status { account } => {
            let chosen: Vec<(String, &Login)> = if account.is_empty() {
                config
                    .accounts
                    .iter()
                    .map(|a| (a.name.clone(), &a.login))
                    .chain(config.imap.iter().map(|s| {
                        (
                            crate::delivery::imap::Section::credential_name(&s.name),
                            &s.login,
                        )
                    }))
                    .filter(|(_, login)| settings(login).is_some())
                    .collect()
            } else {
                match super::select(&config, account) {
                    Ok(a) => a.into_iter().map(|a| (a.name.clone(), &a.login)).collect(),
                    Err(code) => return code,
                }
            };
            if chosen.is_empty() {
                println!("no account signs in with OAuth2 (oauth2-provider)");
                return 0;
            }
            let mut code = 0;
            for (key, login) in chosen {
                let (_, option) = crate::config::whose(&key);
                let shown = key
                    .strip_prefix("imap=")
                    .map_or(key.clone(), |n| format!("[[imap]] {n}"));
                let Some(s) = settings(login) else {
                    println!(
                        "{shown}: not an OAuth2 {} (no oauth2-provider)",
                        if key.starts_with("imap=") {
                            "IMAP destination"
                        } else {
                            "account"
                        }
                    );
                    continue;
                };
                match runtime.block_on(s.store.load(&key)) {
                    Ok(Some(_)) => println!(
                        "{shown}: signed in (refresh token in {})",
                        s.store.describe(&key)
                    ),
                    Ok(None) => {
                        println!("{shown}: not signed in: run `popsync oauth2 login {option}`");
                        code = code.max(exit::NO_PERMISSION);
                    }
                    Err(e) => {
                        println!("{shown}: cannot read the token store: {e}");
                        code = code.max(e.class().exit_code());
                    }
                }
            }
            code
        }
        Action::Logout { whose: named } => {
            let (who, settings) = match one(&config, named) {
                Ok(x) => x,
                Err(code) => return code,
            };
            match runtime.block_on(settings.store.delete(&who.key)) {
                Ok(removed) => {
                    oauth2::forget(&who.key);
                    if !cli.quiet {
                        if removed {
                            println!(
                                "signed out: removed the refresh token of {} from {}",
                                who.label,
                                settings.store.describe(&who.key)
                            );
                        } else {
                            println!("{} was not signed in", who.label);
                        }
                    }
                    0
                }
                Err(e) => {
                    eprintln!("popsync: {}: the token store: {e}", who.label);
                    e.class().exit_code()
                }
            }
        }
    }
}

/// The device authorization grant, with the user told what to do.
async fn device_login(settings: &Settings) -> Result<(), oauth2::Error> {
    let endpoints = settings.resolve().await?;
    let start = oauth2::device_start(settings, &endpoints).await?;
    println!(
        "To sign in account {:?}, open\n\n    {}\n\nin a browser (on any device) and enter the code\n\n    {}\n",
        settings.account, start.verification_uri, start.user_code
    );
    if let Some(complete) = &start.verification_uri_complete {
        println!("(or open {complete}, which has the code filled in)\n");
    }
    println!(
        "Waiting for the sign-in to be approved (the code is good for {} minutes) ...",
        start.expires_in.as_secs().div_ceil(60)
    );
    oauth2::device_finish(settings, &endpoints, &start).await
}

/// The authorization code grant through the browser and a loopback redirect. The answer
/// comes back to popsync's port on 127.0.0.1, or is pasted in by the user whose browser
/// runs on another machine (where that address does not load).
async fn browser_login(settings: &Settings, open: bool) -> Result<(), oauth2::Error> {
    let endpoints = settings.resolve().await?;
    let pending = oauth2::loopback::start(settings, &endpoints).await?;
    let opened = open && oauth2::loopback::open_browser(&pending.url);
    if opened {
        println!(
            "To sign in account {:?}, your browser was opened at this address:\n\n    {}\n",
            settings.account, pending.url
        );
    } else {
        println!(
            "To sign in account {:?}, open this address in a browser:\n\n    {}\n\n\
             On another machine, the browser ends at an address starting {} that does not \
             load there: copy that whole address from its address bar and paste it here.\n",
            settings.account, pending.url, pending.redirect_uri
        );
    }
    println!(
        "Waiting for the browser to come back (up to {} minutes) ...",
        oauth2::loopback::WAIT.as_secs() / 60
    );
    pending
        .finish(settings, &endpoints, Some(stdin_lines()))
        .await
}

/// The lines typed (or pasted) on standard input, read by a thread of their own: a read
/// that never ends must not hold up popsync's exit.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let _ = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
    rx
}
