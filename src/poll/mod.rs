//! One fetch of one account: orchestration only.
//!
//! Under the account's lock: finish what a crash left pending ([`recover`]), open the
//! account's delivery target, log in, and run sessions ([`session`]): list,
//! [`plan`](crate::plan), apply the size rules, download new messages in batches into the
//! target ([`batch`]), delete what the plan says is due, QUIT. Then record the outcome and
//! run the new-mail hook. When a session brings new mail and listed nothing popsync knew
//! before — the sign of a server that hands out mail in portions, as Gmail does (about 250
//! messages per session) — another session follows in the same run, until one brings
//! nothing new.
//!
//! The way down is one way: the scheduler (or `popsync fetch`) calls [`fetch_account`];
//! a session asks the pure planner what to do, streams each batch into the delivery target,
//! which records each step through the store's named transitions; the report comes back
//! up. Ordering rules enforced on the way (see also `delivery` and `store`):
//!
//! - a message's *pending* row is committed before it can appear in the mailbox;
//! - a message is marked *delivered* only once it is durably in the mailbox (or the MDA
//!   said so);
//! - DELE is sent only for delivered messages, after they are marked *delete-pending*;
//!   they become *deleted* only when QUIT answers +OK. A session that breaks before that
//!   sends the DELEs again next time, without downloading anything again.
//!
//! This code blocks on disk and SQLite between network reads; run it on a runtime of its
//! own ([`runtime`]; the CLI runs each account on its own thread).

mod batch;
mod error;
mod recover;
pub mod renumber;
mod session;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tracing::{Instrument, debug, error_span, info, warn};

use crate::clock::Clock;
use crate::config::Account;
use crate::delivery::Target;
use crate::lock::{AccountLock, LockError};
use crate::plan::Policy;
use crate::pop3::{ConnectOptions, Credentials};
use crate::store::{AccountId, PollRecord, Store};
use crate::summary::MessageSummary;

pub use crate::exit::ErrorClass;
pub use error::{FetchError, IN_USE_DELAY, LOGIN_DELAY_DEFAULT, Problem, STOPPED};

/// Most sessions in one run (each brings at least one new message, or the run stops).
pub const MAX_SESSIONS: u32 = 100;
/// A batch ends after this many messages ...
pub const BATCH_MESSAGES: usize = 64;
/// ... or this many bytes (by the server's approximate sizes), whichever comes first.
pub const BATCH_BYTES: u64 = 8 << 20;
/// How many new messages' summaries a report keeps.
pub const SUMMARIES_KEPT: usize = 5;

/// Reports progress to whoever shows it. All methods have empty defaults.
pub trait Progress: Send + Sync {
    /// Another process holds the account's lock; this run waits for it.
    fn waiting_for_lock(&self, _account: &str, _holder: Option<&str>) {}
    /// A session is about to download `messages` messages of about `bytes` bytes.
    fn downloading(&self, _account: &str, _messages: usize, _bytes: u64) {}
    /// Message bytes arrived.
    fn bytes(&self, _account: &str, _n: u64) {}
    /// A message was completely received.
    fn message(&self, _account: &str) {}
}

/// Progress reporting that reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// Everything a fetch needs from its surroundings.
pub struct Context<'a> {
    pub state_dir: &'a Path,
    pub clock: &'a dyn Clock,
    pub progress: &'a dyn Progress,
    /// How the server is reached: [`pop3::Tcp`](crate::pop3::Tcp), or an in-memory stream
    /// in tests.
    pub connector: &'a dyn crate::pop3::Connector,
    /// Set when popsync is shutting down: the fetch stops at the next message boundary (or
    /// within the message being received), keeping everything already stored.
    pub cancel: Option<&'a AtomicBool>,
}

impl Context<'_> {
    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::SeqCst))
    }
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// Per-run choices.
#[derive(Debug, Clone, Copy, Default)]
pub struct FetchOptions {
    /// Record everything on the server as seen, without downloading.
    pub mark_seen: bool,
    /// If another process holds the account, fail at once instead of waiting.
    pub no_wait: bool,
    /// The caller runs the new-mail hook itself (the agent does, off its scheduling path).
    pub skip_hook: bool,
    /// Delete nothing from the server in this run, whatever the account's retention and
    /// oversize rules say (`fetch --keep`).
    pub keep: bool,
}

/// What a fetch did (also when it ended in an error part-way).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub account: String,
    pub new_messages: u64,
    pub new_bytes: u64,
    pub marked_seen: u64,
    pub deleted: u64,
    /// Messages the server refused to hand out (-ERR to RETR); tried again next time.
    pub refused: u64,
    /// Pending deliveries from an interrupted run found complete and confirmed.
    pub recovered: u64,
    pub sessions: u32,
    /// Messages on the server at the last listing.
    pub on_server: u64,
    pub elapsed_ms: u64,
    /// Sender and subject of the newest new messages (at most [`SUMMARIES_KEPT`], newest
    /// last), for notifications.
    pub newest: Vec<MessageSummary>,
    /// New messages left on the server for being over `max-size`.
    pub oversize_skipped: u64,
    /// New messages delivered as their headers only.
    pub headers_only: u64,
    /// Known messages the server listed under new unique-ids, recognised by content and
    /// not downloaded again.
    pub renumbered: u64,
    /// How the new-mail hook went, if it ran.
    pub hook: Option<crate::hook::HookOutcome>,
}

/// The result of fetching one account.
#[derive(Debug)]
pub struct Outcome {
    pub report: Report,
    pub error: Option<FetchError>,
}

/// The async runtime a fetch runs on: one thread, its own (a fetch blocks on disk and
/// SQLite between network reads, so it must not share a thread with anything that has to
/// answer promptly).
pub fn runtime() -> Result<tokio::runtime::Runtime, FetchError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(FetchError::Runtime)
}

/// Fetches one account. Never panics on server or disk trouble; the outcome says what was
/// done and what went wrong. What it logs is marked with the account's name: it runs in a
/// span `account` (at the error level, so that it is there whatever level is logged).
pub async fn fetch_account(
    account: &Account,
    ctx: &Context<'_>,
    options: &FetchOptions,
) -> Outcome {
    fetch_logged(account, ctx, options)
        .instrument(error_span!("account", name = account.name.as_str()))
        .await
}

async fn fetch_logged(account: &Account, ctx: &Context<'_>, options: &FetchOptions) -> Outcome {
    let started = Instant::now();
    let mut report = Report {
        account: account.name.clone(),
        ..Report::default()
    };
    let error = locked(account, ctx, options, &mut report).await.err();
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    if report.new_messages > 0
        && !options.skip_hook
        && let Some(argv) = &account.notifications.on_new_mail
    {
        report.hook = Some(
            crate::hook::run_new_mail_hook(
                argv,
                &account.name,
                report.new_messages,
                &account.delivery,
                account.notifications.hook_timeout,
            )
            .await,
        );
    }
    match &error {
        None => info!(
            "done in {} ms: {} new, {} deleted, {} on the server, {} session{}",
            report.elapsed_ms,
            report.new_messages,
            report.deleted,
            report.on_server,
            report.sessions,
            if report.sessions == 1 { "" } else { "s" }
        ),
        Some(e) => info!(
            "failed after {} ms: {}",
            report.elapsed_ms,
            crate::error_chain(e)
        ),
    }
    Outcome { report, error }
}

async fn locked(
    account: &Account,
    ctx: &Context<'_>,
    options: &FetchOptions,
    report: &mut Report,
) -> Result<(), FetchError> {
    // A state directory that cannot be made is named as such (not as its lock file).
    if let Err(source) = crate::store::create_private_dir(ctx.state_dir) {
        let source = match std::fs::metadata(ctx.state_dir) {
            Ok(m) if !m.is_dir() => std::io::Error::other("it is not a directory"),
            _ => source,
        };
        return Err(FetchError::Store(crate::store::StoreError::StateDir {
            path: ctx.state_dir.to_owned(),
            source,
        }));
    }
    let _lock = match AccountLock::try_acquire(ctx.state_dir, &account.name) {
        Ok(lock) => lock,
        Err(LockError::Busy { holder }) if !options.no_wait => {
            ctx.progress
                .waiting_for_lock(&account.name, holder.as_deref());
            let dir = ctx.state_dir.to_owned();
            let name = account.name.clone();
            tokio::task::spawn_blocking(move || AccountLock::acquire_blocking(&dir, &name))
                .await
                .map_err(|e| LockError::Io {
                    path: ctx.state_dir.to_owned(),
                    source: std::io::Error::other(e),
                })??
        }
        // The lock lives in the state directory: a trouble with it is the directory's.
        Err(LockError::Io { path, source }) => {
            return Err(FetchError::Store(crate::store::StoreError::StateDir {
                path: ctx.state_dir.to_owned(),
                source: std::io::Error::new(
                    source.kind(),
                    format!("cannot lock {}: {source}", path.display()),
                ),
            }));
        }
        Err(e) => return Err(e.into()),
    };
    let mut store = Store::open(ctx.state_dir)?;
    let id = store.account(&account.name, ctx.clock.now())?;
    debug!("state database {}", store.path().display());
    let result = run(account, ctx, options, &mut store, id, report).await;
    let record = PollRecord {
        at: ctx.clock.now(),
        ok: result.is_ok(),
        error: result.as_ref().err().map(|e| crate::error_chain(e)),
        new_messages: report.new_messages,
    };
    if let Err(e) = store.record_poll(id, &record) {
        warn!("could not record the outcome of this fetch: {e}");
    }
    result
}

/// What the sessions of one fetch share.
struct SessionCtx<'a, 'c> {
    account: &'a Account,
    ctx: &'a Context<'c>,
    store: &'a mut Store,
    id: AccountId,
    target: Box<dyn Target>,
    policy: Policy,
    report: &'a mut Report,
}

/// Connection settings for an account.
pub fn connect_options(account: &Account) -> Result<ConnectOptions, FetchError> {
    account
        .server
        .connect_options(account.timing.timeout)
        .map_err(|source| FetchError::CaFile {
            path: account.server.ca_file.clone().unwrap_or_default(),
            source,
        })
}

async fn run(
    account: &Account,
    ctx: &Context<'_>,
    options: &FetchOptions,
    store: &mut Store,
    id: AccountId,
    report: &mut Report,
) -> Result<(), FetchError> {
    report.recovered += recover::recover(store, id, account, ctx.clock.now())?;
    let setup = crate::delivery::Setup {
        account: &account.name,
        state_dir: ctx.state_dir,
        store,
    };
    let target = account.delivery.open(&setup)?;
    let connect = connect_options(account)?;
    // An OAuth2 access token held from an earlier poll may have been revoked since.
    let mut held_token = crate::oauth2::holds(&account.name);
    let mut credentials = Credentials {
        username: account.login.username.clone(),
        password: account.login.password.resolve().await?,
        token: account.login.password.is_token(),
    };
    let mut sc = SessionCtx {
        account,
        ctx,
        store,
        id,
        target,
        policy: if options.keep {
            Policy::of(account, options.mark_seen).keeping_everything()
        } else {
            Policy::of(account, options.mark_seen)
        },
        report,
    };
    loop {
        if ctx.cancelled() {
            return Err(FetchError::Stopped);
        }
        let before = sc.report.new_messages;
        let outcome = match session::session(&mut sc, &connect, &credentials).await {
            Ok(o) => o,
            // The server refused the access token held from before: asked for a new one
            // (which says so if the sign-in itself is gone), and tried once more.
            Err(FetchError::Pop3(e)) if std::mem::take(&mut held_token) && e.is_auth() => {
                info!(
                    "the server refused the OAuth2 access token held from an earlier poll \
                     ({e}); asking the authorization server for a new one"
                );
                crate::oauth2::forget(&account.name);
                credentials.password = account.login.password.resolve().await?;
                continue;
            }
            // Asking again for more failed before bringing anything (a server enforcing a
            // delay between logins, say): what arrived so far is stored; the next run asks.
            Err(e)
                if sc.report.sessions > 0
                    && sc.report.new_messages == before
                    && e.class() == ErrorClass::Temporary =>
            {
                info!(
                    "asking again for more mail failed, leaving it for the next run: {}",
                    crate::error_chain(&e)
                );
                break;
            }
            Err(e) => return Err(e),
        };
        sc.report.sessions += 1;
        if outcome.fetched == 0
            || !outcome.may_be_partial
            || options.mark_seen
            || sc.report.sessions >= MAX_SESSIONS
        {
            break;
        }
        info!(
            "the session brought {} new message(s) and listed nothing older: asking again for more",
            outcome.fetched
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
