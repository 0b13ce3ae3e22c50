//! `popsync status`: how each account is doing, from the state database (readable while the
//! daemon runs).

use crate::exit;
use serde::Serialize;

use super::Cli;
use crate::clock::{Clock, SystemClock};
use crate::daemon::control::DaemonLock;
use crate::store::Store;

/// Show each account's last poll, message counts and next poll, and whether a daemon runs
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only this account (repeat for several)
    #[arg(long, short, value_name = "NAME")]
    account: Vec<String>,

    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Status {
    config: String,
    state_dir: String,
    daemon: Option<DaemonStatus>,
    accounts: Vec<AccountStatus>,
}

#[derive(Debug, Serialize)]
struct DaemonStatus {
    pid: u32,
    config: String,
    /// Whether it runs with this configuration file.
    this_config: bool,
}

#[derive(Debug, Serialize)]
struct PauseStatus {
    /// What the user was told, e.g. "popsync: login refused".
    problem: String,
    /// Unix seconds.
    since: i64,
    /// When the agent tries it again by itself (unix seconds).
    until: i64,
}

#[derive(Debug, Serialize)]
struct AccountStatus {
    name: String,
    /// Unix seconds.
    last_poll: Option<i64>,
    last_poll_ok: Option<bool>,
    /// The last poll was stopped by a shutdown (not a failure of the account).
    last_poll_interrupted: bool,
    last_error: Option<String>,
    last_poll_new_messages: Option<u64>,
    last_success: Option<i64>,
    next_poll: Option<i64>,
    /// Left alone after a problem that needs the user (a refused login, say).
    paused: Option<PauseStatus>,
    messages_known: u64,
    downloaded_last_day: u64,
    downloaded_total: u64,
    oversize_on_server: u64,
    headers_only: u64,
    /// The last time the server renumbered the mailbox.
    renumbered: Option<RenumberedStatus>,
    /// How to sign in again when a sign-in is what it waits for.
    #[serde(skip)]
    sign_in_with: String,
}

#[derive(Debug, Serialize)]
struct RenumberedStatus {
    /// Unix seconds.
    at: i64,
    /// Messages recognised under new unique-ids (not downloaded again).
    messages: u64,
}

pub fn run(cli: &Cli, args: &StatusArgs) -> u8 {
    let config = match cli.load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let selected = match super::select(&config, &args.account) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let now = SystemClock.now();
    let store = if config.state_dir.join(crate::store::DB_FILE).exists() {
        // A state directory popsync cannot write in is still shown, as it is.
        match Store::open(&config.state_dir)
            .or_else(|e| Store::open_for_reading(&config.state_dir).map_err(|_| e))
        {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("popsync: {}", crate::error_chain(&e));
                return exit::IO_ERROR;
            }
        }
    } else {
        None
    };
    let mut accounts = Vec::new();
    for account in selected {
        let s = match &store {
            Some(store) => match store.account_status(&account.name, now) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("popsync: {}", crate::error_chain(&e));
                    return exit::IO_ERROR;
                }
            },
            None => None,
        };
        let s = s.unwrap_or(crate::store::AccountStatus {
            last_poll: None,
            last_success_at: None,
            next_poll_at: None,
            paused: None,
            known: 0,
            delivered_total: 0,
            delivered_last_day: 0,
            oversize_on_server: 0,
            headers_only: 0,
            renumbered: None,
        });
        accounts.push(AccountStatus {
            name: account.name.clone(),
            last_poll: s.last_poll.as_ref().map(|p| p.at),
            last_poll_ok: s.last_poll.as_ref().map(|p| p.ok),
            last_poll_interrupted: s
                .last_poll
                .as_ref()
                .is_some_and(|p| !p.ok && p.error.as_deref() == Some(crate::poll::STOPPED)),
            last_error: s.last_poll.as_ref().and_then(|p| p.error.clone()),
            last_poll_new_messages: s.last_poll.as_ref().map(|p| p.new_messages),
            last_success: s.last_success_at,
            next_poll: s.next_poll_at,
            paused: s.paused.as_ref().map(|p| PauseStatus {
                problem: p.problem.clone(),
                since: p.since,
                until: p.until,
            }),
            messages_known: s.known,
            downloaded_last_day: s.delivered_last_day,
            downloaded_total: s.delivered_total,
            oversize_on_server: s.oversize_on_server,
            headers_only: s.headers_only,
            renumbered: s
                .renumbered
                .map(|(at, messages)| RenumberedStatus { at, messages }),
            sign_in_with: sign_in_with(account),
        });
    }
    let daemon = DaemonLock::running(&config.state_dir).map(|d| DaemonStatus {
        this_config: d.config == config.file,
        pid: d.pid,
        config: d.config.display().to_string(),
    });
    let status = Status {
        config: config.file.display().to_string(),
        state_dir: config.state_dir.display().to_string(),
        daemon,
        accounts,
    };
    if args.json {
        match serde_json::to_string_pretty(&status) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("popsync: {e}");
                return exit::SOFTWARE;
            }
        }
    } else {
        print!("{}", text(&status, now));
    }
    0
}

/// The command that signs `account` in again: its own sign-in, or its IMAP destination's
/// (both, when both sign in with OAuth2: `oauth2 status` tells which is gone).
fn sign_in_with(account: &crate::config::Account) -> String {
    use crate::config::PasswordSource;
    let own = matches!(account.login.password, PasswordSource::OAuth2(_));
    let destination = account
        .delivery
        .settings::<crate::delivery::imap::Settings>()
        .filter(|s| matches!(s.section.login.password, PasswordSource::OAuth2(_)))
        .map(|s| s.section.name.clone());
    match (own, destination) {
        (false, Some(dest)) => format!("`popsync oauth2 login --imap {dest}`"),
        (true, Some(dest)) => format!(
            "`popsync oauth2 login --account {}` or `popsync oauth2 login --imap {dest}` \
             (`popsync oauth2 status` says which)",
            account.name
        ),
        _ => format!("`popsync oauth2 login --account {}`", account.name),
    }
}

/// A time as local date and time, and how far from now: "in 4 min", "3 h ago", "now".
fn when(at: Option<i64>, now: i64) -> String {
    let Some(at) = at else {
        return "never".to_owned();
    };
    let local = chrono::DateTime::from_timestamp(at, 0)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| at.to_string());
    format!("{local} ({})", relative(at - now))
}

/// `d` seconds from now, in words.
fn relative(d: i64) -> String {
    let span = crate::clock::span(d.unsigned_abs());
    match d {
        0 => "now".to_owned(),
        d if d > 0 => format!("in {span}"),
        _ => format!("{span} ago"),
    }
}

fn text(s: &Status, now: i64) -> String {
    let mut out = String::new();
    match &s.daemon {
        Some(d) if d.this_config => out.push_str(&format!("daemon: running (process {})\n", d.pid)),
        Some(d) => out.push_str(&format!(
            "daemon: running (process {}) with another config file, {}\n",
            d.pid, d.config
        )),
        None => out.push_str("daemon: not running\n"),
    }
    for a in &s.accounts {
        out.push_str(&format!("\n{}\n", a.name));
        let outcome = match (a.last_poll_ok, &a.last_error) {
            (None, _) => "never polled".to_owned(),
            (Some(false), _) if a.last_poll_interrupted => {
                "interrupted: popsync was stopped (what arrived is stored)".to_owned()
            }
            (Some(true), _) => format!("ok, {} new", a.last_poll_new_messages.unwrap_or(0)),
            (Some(false), Some(e)) => format!("FAILED: {e}"),
            (Some(false), None) => "FAILED".to_owned(),
        };
        out.push_str(&format!(
            "  last poll:     {} — {outcome}\n",
            when(a.last_poll, now)
        ));
        if a.last_poll_ok == Some(false) {
            out.push_str(&format!("  last success:  {}\n", when(a.last_success, now)));
        }
        if let Some(p) = &a.paused
            && p.problem == crate::daemon::SIGN_IN_AGAIN
        {
            out.push_str(&format!(
                "  paused:        needs an OAuth2 sign-in (since {}): sign in again with {}\n",
                when(Some(p.since), now),
                a.sign_in_with
            ));
        } else if let Some(p) = &a.paused {
            out.push_str(&format!(
                "  paused:        {} (since {}); tried again {}, or now with `popsync poll --account {}`\n",
                p.problem.strip_prefix("popsync: ").unwrap_or(&p.problem),
                when(Some(p.since), now),
                relative(p.until - now),
                a.name
            ));
        }
        if s.daemon.is_some() {
            out.push_str(&format!("  next poll:     {}\n", when(a.next_poll, now)));
        }
        out.push_str(&format!(
            "  messages:      {} known, {} downloaded in the last day, {} in all\n",
            a.messages_known, a.downloaded_last_day, a.downloaded_total
        ));
        if let Some(r) = &a.renumbered {
            out.push_str(&format!(
                "  renumbered:    {} — the server gave {} message(s) new unique-ids; none downloaded again\n",
                when(Some(r.at), now),
                crate::notify::thousands(r.messages)
            ));
        }
        if a.oversize_on_server > 0 || a.headers_only > 0 {
            out.push_str(&format!(
                "  size rules:    {} over max-size left on the server, {} delivered as headers only\n",
                a.oversize_on_server, a.headers_only
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_how_far_from_now() {
        assert_eq!(relative(0), "now");
        assert_eq!(relative(45), "in 45 s");
        assert_eq!(relative(-45), "45 s ago");
        assert_eq!(relative(-180), "3 min ago");
        assert_eq!(relative(7200), "in 2 h");
        assert_eq!(relative(-3 * 86_400 - 5), "3 d ago");
    }
}
