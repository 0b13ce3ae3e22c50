//! `popsync fetch`: one pass over the accounts, then exit.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Cli;
use super::progress::{self, TerminalProgress, human_bytes};
use crate::clock::SystemClock;
use crate::poll::{self, Context, FetchOptions, Outcome, Report};

/// Download new messages from every account (or the ones named), once, then exit
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Only this account (repeat for several)
    #[arg(long, short, value_name = "NAME")]
    account: Vec<String>,

    /// Record every message now on the server as already seen, without downloading it
    /// (for switching a mailbox that another program has been reading over to popsync)
    #[arg(long)]
    mark_seen: bool,

    /// Delete nothing from the server in this run, whatever retention and oversize say
    /// (what is due is deleted by a later run)
    #[arg(long, short)]
    keep: bool,

    /// If another popsync is fetching an account, fail at once (exit 75) instead of waiting
    #[arg(long)]
    no_wait: bool,

    /// Never show the progress line
    #[arg(long)]
    no_progress: bool,

    /// Fetch at most this many accounts at the same time
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
}

pub fn run(cli: &Cli, args: &FetchArgs) -> u8 {
    let config = match cli.load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let accounts = match super::select(&config, &args.account) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let progress = TerminalProgress::new(!cli.quiet, !cli.quiet && !args.no_progress);
    let options = FetchOptions {
        mark_seen: args.mark_seen,
        no_wait: args.no_wait,
        skip_hook: false,
        keep: args.keep,
    };
    let clock = SystemClock;
    let ctx = Context {
        state_dir: &config.state_dir,
        clock: &clock,
        progress: &progress,
        connector: &crate::pop3::Tcp,
        cancel: None,
    };
    let next = AtomicUsize::new(0);
    let worst: Mutex<Option<poll::ErrorClass>> = Mutex::new(None);
    let workers = usize::from(args.parallel).min(accounts.len());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let runtime = match poll::runtime() {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("popsync: {}", crate::error_chain(&e));
                        *worst.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.class());
                        return;
                    }
                };
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(account) = accounts.get(i) else {
                        break;
                    };
                    let outcome = runtime.block_on(poll::fetch_account(account, &ctx, &options));
                    report(cli.quiet, &outcome);
                    if let Some(e) = &outcome.error {
                        let mut w = worst.lock().unwrap_or_else(|e| e.into_inner());
                        *w = (*w).max(Some(e.class()));
                    }
                }
            });
        }
    });
    progress::clear();
    match worst.into_inner().unwrap_or_else(|e| e.into_inner()) {
        None => 0,
        Some(class) => class.exit_code(),
    }
}

/// Prints the account's summary line (stdout) and its error, if any (stderr).
fn report(quiet: bool, outcome: &Outcome) {
    progress::clear();
    let r = &outcome.report;
    let did_something = r.new_messages > 0
        || r.deleted > 0
        || r.marked_seen > 0
        || r.recovered > 0
        || r.renumbered > 0;
    if !quiet && (outcome.error.is_none() || did_something) {
        println!("{}", summary(r));
    }
    if let Some(e) = &outcome.error {
        eprintln!("popsync: {}: error: {}", r.account, crate::error_chain(e));
    }
}

/// One line saying what a fetch did.
pub fn summary(r: &Report) -> String {
    let mut parts = Vec::new();
    if r.marked_seen > 0 {
        parts.push(format!(
            "marked {} message{} as seen without downloading",
            r.marked_seen,
            plural(r.marked_seen)
        ));
    }
    if r.new_messages > 0 {
        parts.push(format!(
            "{} new message{} ({})",
            r.new_messages,
            plural(r.new_messages),
            human_bytes(r.new_bytes)
        ));
    } else if r.marked_seen == 0 {
        parts.push("no new messages".to_owned());
    }
    if r.headers_only > 0 {
        parts.push(format!(
            "{} of them as headers only (over headers-only-over)",
            r.headers_only
        ));
    }
    if r.deleted > 0 {
        parts.push(format!("{} deleted from the server", r.deleted));
    }
    if r.oversize_skipped > 0 {
        parts.push(format!(
            "{} over max-size left on the server",
            r.oversize_skipped
        ));
    }
    if r.recovered > 0 {
        parts.push(format!("{} recovered from an interrupted run", r.recovered));
    }
    if r.renumbered > 0 {
        parts.push(format!(
            "the server renumbered {} message{} popsync already had (none downloaded again)",
            crate::notify::thousands(r.renumbered),
            plural(r.renumbered)
        ));
    }
    format!("{}: {}", r.account, parts.join(", "))
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lines() {
        let r = Report {
            account: "home".into(),
            ..Report::default()
        };
        assert_eq!(summary(&r), "home: no new messages");
        let r = Report {
            account: "home".into(),
            new_messages: 3,
            new_bytes: 4_100_000,
            deleted: 3,
            ..Report::default()
        };
        assert_eq!(
            summary(&r),
            "home: 3 new messages (4.1 MB), 3 deleted from the server"
        );
        let r = Report {
            account: "home".into(),
            new_messages: 2,
            new_bytes: 9_000,
            headers_only: 1,
            oversize_skipped: 4,
            ..Report::default()
        };
        assert_eq!(
            summary(&r),
            "home: 2 new messages (9.0 KB), 1 of them as headers only (over headers-only-over), 4 over max-size left on the server"
        );
        let r = Report {
            account: "w".into(),
            marked_seen: 1,
            ..Report::default()
        };
        assert_eq!(
            summary(&r),
            "w: marked 1 message as seen without downloading"
        );
    }
}
