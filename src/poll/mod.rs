//! One fetch of one account: orchestration only.
//!
//! Under the account's lock: resolve any deliveries a crash left pending ([`recover`]), log
//! in, list, [`plan`](crate::plan), apply the size rules, download new messages in batches
//! with the delivery protocol of the account's mailbox ([`batch`]: Maildir, mbox or MDA),
//! delete what the retention policy says is due, QUIT, and record the outcome.
//! When a session brings new mail and listed nothing popsync knew before — the sign of a
//! server that hands out mail in portions, as Gmail does (about 250 messages per session) —
//! another session follows in the same run, until one brings nothing new.
//!
//! Ordering rules enforced here (see also `delivery` and `store`):
//!
//! - a message's *pending* row is committed before it can appear in the mailbox (before its
//!   Maildir file exists, before it is appended to the mbox, before the MDA sees it);
//! - a message is marked *delivered* only once it is durably in the mailbox (or the MDA
//!   said so);
//! - DELE is sent only for delivered messages, after they are marked *delete-pending*;
//!   they become *deleted* only when QUIT answers +OK. A session that breaks before that
//!   sends the DELEs again next time, without downloading anything again.
//!
//! This code blocks on disk and SQLite between network reads; run it on a runtime of its
//! own (the CLI runs each account on its own thread).

mod batch;
mod recover;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::config::{Account, Delivery, Retention};
use crate::delivery::maildir::Maildir;
use crate::delivery::mda::MdaOutcome;
use crate::failpoint;
use crate::lock::{AccountLock, LockError};
use crate::plan::{self, Listed, Policy};
use crate::pop3::{self, ConnectOptions, Credentials, MsgNum, Status, Timeouts, TlsOptions};
use crate::store::{AccountId, MessageState, PollRecord, Store, StoreError};
use crate::summary::MessageSummary;

use batch::{Target, fetch_batch};

/// Most sessions in one run (each brings at least one new message, or the run stops).
pub const MAX_SESSIONS: u32 = 100;
/// A batch ends after this many messages ...
pub const BATCH_MESSAGES: usize = 64;
/// ... or this many bytes (by the server's approximate sizes), whichever comes first.
pub const BATCH_BYTES: u64 = 8 << 20;

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
    /// How the new-mail hook went, if it ran.
    pub hook: Option<crate::hook::HookOutcome>,
}

/// How many new messages' summaries a report keeps.
pub const SUMMARIES_KEPT: usize = 5;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Pop3(#[from] pop3::Error),
    #[error("could not get the {}", if .0.is_token() { "OAuth2 token" } else { "password" })]
    Password(#[from] crate::config::secret::PasswordError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("mailbox {}", .path.display())]
    Mailbox {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot read ca-file {}", .path.display())]
    CaFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the server refused to hand out {count} message{} (they stay on the server and are tried again next time); the first answer was: {first}",
        if *.count == 1 { "" } else { "s" }
    )]
    Refused { count: u64, first: Status },
    #[error("stopped: popsync is shutting down (what arrived so far is stored)")]
    Stopped,
    #[error("{0}")]
    MboxBusy(String),
    #[error(transparent)]
    Mda(MdaFailure),
}

/// Why an MDA did not take a message (the session stopped there, before any DELE).
#[derive(Debug, thiserror::Error)]
pub enum MdaFailure {
    #[error("the MDA {program:?} asks to try again later (exit status 75){}", note(.stderr))]
    TryLater { program: String, stderr: String },
    #[error("the MDA {program:?} failed ({status}){}", note(.stderr))]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error(
        "the MDA {program:?} did not finish within mda-timeout ({}) and was stopped",
        crate::config::format_duration(*.limit)
    )]
    TimedOut {
        program: String,
        limit: std::time::Duration,
    },
    #[error("the MDA could not be run: {0}")]
    NotStarted(String),
}

fn note(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

impl MdaFailure {
    fn from_outcome(program: &str, outcome: MdaOutcome, limit: std::time::Duration) -> Self {
        let program = program.to_owned();
        match outcome {
            MdaOutcome::TryLater { stderr } => Self::TryLater { program, stderr },
            MdaOutcome::Failed { status, stderr } => Self::Failed {
                program,
                status,
                stderr,
            },
            MdaOutcome::TimedOut => Self::TimedOut { program, limit },
            MdaOutcome::NotStarted(e) => Self::NotStarted(e),
            MdaOutcome::Delivered => Self::NotStarted("delivered".into()),
        }
    }
}

/// How a failure should be treated: what the exit status says and whether retrying helps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorClass {
    /// Try again later (network, server busy). sysexits EX_TEMPFAIL.
    Temporary,
    /// Credentials refused or the server's certificate not trusted. EX_NOPERM.
    Auth,
    /// Something on this machine: the mailbox or the state database. EX_IOERR.
    Local,
    /// The configuration cannot work with this server (no STLS, no UIDL). EX_CONFIG.
    Config,
}

impl ErrorClass {
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Temporary => 75,
            Self::Auth => 77,
            Self::Local => 74,
            Self::Config => 78,
        }
    }
}

impl FetchError {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Pop3(e) if e.is_auth() || e.is_certificate() => ErrorClass::Auth,
            Self::Pop3(e) if e.is_local() => ErrorClass::Local,
            Self::Pop3(e) if e.is_permanent() => ErrorClass::Config,
            Self::Pop3(_) => ErrorClass::Temporary,
            Self::Password(e) => match e {
                // A command that cannot even be started is a configuration mistake ...
                crate::config::secret::PasswordError::Spawn { .. } => ErrorClass::Config,
                // ... one that hangs may work next time ...
                crate::config::secret::PasswordError::Timeout { .. } => ErrorClass::Temporary,
                // ... one that fails or prints nothing leaves popsync without credentials.
                crate::config::secret::PasswordError::Failed { .. }
                | crate::config::secret::PasswordError::Empty { .. } => ErrorClass::Auth,
                // Nothing stored: the user must store it; a keyring not (yet) running or
                // not answering may be there next time.
                crate::config::secret::PasswordError::Keyring(k) => match k {
                    crate::config::keyring::KeyringError::NotFound { .. } => ErrorClass::Auth,
                    crate::config::keyring::KeyringError::Unavailable { .. }
                    | crate::config::keyring::KeyringError::Timeout(_) => ErrorClass::Temporary,
                    crate::config::keyring::KeyringError::Other(_) => ErrorClass::Local,
                },
            },
            Self::Store(_) | Self::Mailbox { .. } => ErrorClass::Local,
            Self::Lock(LockError::Busy { .. }) => ErrorClass::Temporary,
            Self::Lock(_) => ErrorClass::Local,
            Self::CaFile { .. } => ErrorClass::Config,
            Self::Refused { .. } | Self::Stopped | Self::MboxBusy(_) => ErrorClass::Temporary,
            Self::Mda(MdaFailure::TryLater { .. } | MdaFailure::TimedOut { .. }) => {
                ErrorClass::Temporary
            }
            Self::Mda(MdaFailure::NotStarted(_)) => ErrorClass::Config,
            Self::Mda(MdaFailure::Failed { .. }) => ErrorClass::Local,
        }
    }
}

/// The result of fetching one account.
#[derive(Debug)]
pub struct Outcome {
    pub report: Report,
    pub error: Option<FetchError>,
}

/// Fetches one account. Never panics on server or disk trouble; the outcome says what was
/// done and what went wrong.
pub async fn fetch_account(
    account: &Account,
    ctx: &Context<'_>,
    options: &FetchOptions,
) -> Outcome {
    let started = Instant::now();
    let mut report = Report {
        account: account.name.clone(),
        ..Report::default()
    };
    let error = locked(account, ctx, options, &mut report).await.err();
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    if report.new_messages > 0
        && let Some(argv) = &account.on_new_mail
    {
        report.hook = Some(
            crate::hook::run_new_mail_hook(
                argv,
                &account.name,
                report.new_messages,
                &account.delivery,
                account.hook_timeout,
            )
            .await,
        );
    }
    match &error {
        None => info!(
            "{}: done in {} ms: {} new, {} deleted, {} on the server, {} session{}",
            account.name,
            report.elapsed_ms,
            report.new_messages,
            report.deleted,
            report.on_server,
            report.sessions,
            if report.sessions == 1 { "" } else { "s" }
        ),
        Some(e) => info!(
            "{}: failed after {} ms: {}",
            account.name,
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
        Err(e) => return Err(e.into()),
    };
    let mut store = Store::open(ctx.state_dir)?;
    let id = store.account(&account.name, ctx.clock.now())?;
    debug!(
        "{}: state database {}",
        account.name,
        store.path().display()
    );
    let result = run(account, ctx, options, &mut store, id, report).await;
    let record = PollRecord {
        at: ctx.clock.now(),
        ok: result.is_ok(),
        error: result.as_ref().err().map(|e| crate::error_chain(e)),
        new_messages: report.new_messages,
    };
    if let Err(e) = store.record_poll(id, &record) {
        warn!(
            "{}: could not record the outcome of this fetch: {e}",
            account.name
        );
    }
    result
}

/// Connection settings for an account.
pub fn connect_options(account: &Account) -> Result<ConnectOptions, FetchError> {
    let mut tls = TlsOptions {
        pinned_sha256: account.tls_fingerprint,
        dangerous_accept_invalid: account.dangerous_accept_invalid_certs,
        ..TlsOptions::default()
    };
    if let Some(path) = &account.ca_file {
        let bytes = std::fs::read(path).map_err(|source| FetchError::CaFile {
            path: path.clone(),
            source,
        })?;
        tls.extra_roots.push(bytes);
    }
    Ok(ConnectOptions {
        host: account.host.clone(),
        port: account.port,
        security: account.security,
        tls,
        timeouts: Timeouts::uniform(account.timeout),
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
    recover::recover(store, id, account, ctx.clock.now(), report)?;
    let target = open_target(account, ctx.state_dir, store)?;
    let connect = connect_options(account)?;
    let credentials = Credentials {
        username: account.username.clone(),
        password: account.password.resolve().await?,
        token: account.password.is_token(),
    };
    let policy = Policy {
        retention: account.retention,
        forget_after: account.forget_after,
        mark_seen: options.mark_seen,
        max_size: account.max_size,
        oversize: account.oversize,
        headers_only_over: account.headers_only_over,
    };
    let mut session_ctx = SessionCtx {
        account,
        ctx,
        store,
        id,
        target,
        policy,
        report,
        batch_uids: HashMap::new(),
    };
    loop {
        if ctx.cancelled() {
            return Err(FetchError::Stopped);
        }
        let before = session_ctx.report.new_messages;
        let outcome = match session(&mut session_ctx, &connect, &credentials).await {
            Ok(o) => o,
            // Asking again for more failed before bringing anything (a server enforcing a
            // delay between logins, say): what arrived so far is stored; the next run asks.
            Err(e)
                if session_ctx.report.sessions > 0
                    && session_ctx.report.new_messages == before
                    && e.class() == ErrorClass::Temporary =>
            {
                info!(
                    "{}: asking again for more mail failed, leaving it for the next run: {}",
                    account.name,
                    crate::error_chain(&e)
                );
                break;
            }
            Err(e) => return Err(e),
        };
        session_ctx.report.sessions += 1;
        if outcome.fetched == 0
            || !outcome.may_be_partial
            || options.mark_seen
            || session_ctx.report.sessions >= MAX_SESSIONS
        {
            break;
        }
        info!(
            "{}: the session brought {} new message(s) and listed nothing older: asking again for more",
            account.name, outcome.fetched
        );
    }
    Ok(())
}

struct SessionCtx<'a, 'c> {
    account: &'a Account,
    ctx: &'a Context<'c>,
    store: &'a mut Store,
    id: AccountId,
    target: Target,
    policy: Policy,
    report: &'a mut Report,
    /// The current batch's messages: the uid of each, by the name it is delivered under.
    batch_uids: HashMap<String, Vec<u8>>,
}

/// Prepares the account's mailbox: a Maildir is created if missing (and links a crash left
/// in `tmp/` are released); mbox and MDA deliveries get a spool directory, emptied of
/// anything an interrupted run left there.
fn open_target(account: &Account, state_dir: &Path, store: &Store) -> Result<Target, FetchError> {
    let spool = || -> Result<std::path::PathBuf, FetchError> {
        let dir = state_dir.join("spool").join(&account.name);
        crate::store::create_private_dir(&dir).map_err(|source| FetchError::Mailbox {
            path: dir.clone(),
            source,
        })?;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(dir)
    };
    Ok(match &account.delivery {
        Delivery::Maildir(path) => {
            let io = |source| FetchError::Mailbox {
                path: path.clone(),
                source,
            };
            let maildir = Maildir::open(path).map_err(io)?;
            // tmp/ links a run left behind after recording their messages as delivered.
            let stale = maildir
                .stale_links(|name| store.is_delivered_file(name).unwrap_or(false))
                .map_err(io)?;
            maildir.release(&stale.iter().map(String::as_str).collect::<Vec<_>>());
            Target::Maildir(maildir)
        }
        Delivery::Mbox { path, locking } => {
            if let Some(parent) = path.parent()
                && !parent.as_os_str().is_empty()
            {
                crate::store::create_private_dir(parent).map_err(|source| FetchError::Mailbox {
                    path: path.clone(),
                    source,
                })?;
            }
            Target::Mbox {
                path: path.clone(),
                locking: *locking,
                spool: spool()?,
            }
        }
        Delivery::Mda {
            argv,
            from_line,
            timeout,
        } => Target::Mda {
            argv: argv.clone(),
            from_line: *from_line,
            timeout: *timeout,
            spool: spool()?,
        },
    })
}

/// What a session found.
struct SessionOutcome {
    fetched: u64,
    /// The listing may have been one portion of a larger mailbox (see
    /// [`Plan::may_be_partial`](crate::plan::Plan::may_be_partial)).
    may_be_partial: bool,
}

/// One POP3 session.
async fn session(
    sc: &mut SessionCtx<'_, '_>,
    connect: &ConnectOptions,
    credentials: &Credentials,
) -> Result<SessionOutcome, FetchError> {
    let name = sc.account.name.as_str();
    info!(
        "{name}: connecting to {}:{} ({})",
        connect.host,
        connect.port,
        match connect.security {
            pop3::Security::Tls => "implicit TLS",
            pop3::Security::StartTls => "STLS",
            pop3::Security::DangerousPlaintext => "no encryption",
        }
    );
    let greeted = pop3::connect(connect).await?;
    let mut s = greeted.login(credentials, sc.account.auth).await?;
    info!(
        "{name}: logged in as {} ({}{})",
        credentials.username,
        s.auth_method(),
        if s.pipelining() { ", pipelining" } else { "" }
    );
    let uidl = s.uidl().await?;
    sc.report.on_server = uidl.len() as u64;
    let known = sc.store.known(sc.id)?;
    let now = sc.ctx.clock.now();
    let plan = plan::plan(&uidl, &known, &sc.policy, now);
    info!(
        "{name}: {} message(s) on the server, {} new{}, {} to delete",
        uidl.len(),
        plan.fetch.len() + plan.mark_seen.len(),
        if plan.mark_seen.is_empty() {
            ""
        } else {
            " (to be marked seen)"
        },
        plan.delete.len()
    );
    if plan.duplicates > 0 {
        warn!(
            "{name}: the server lists {} unique-id(s) more than once; messages sharing an id cannot be told apart, so nothing is deleted in this session",
            plan.duplicates
        );
    }
    if plan.still_listed_after_delete > 0 {
        debug!(
            "{name}: {} deleted message(s) are still listed by the server",
            plan.still_listed_after_delete
        );
    }
    sc.store
        .apply_listing(sc.id, &plan.relisted, &plan.unlisted, &plan.forget, now)?;
    if !plan.forget.is_empty() {
        info!(
            "{name}: forgot {} message(s) gone from the server for longer than forget-after",
            plan.forget.len()
        );
    }
    if !plan.confirmed_deleted.is_empty() {
        debug!(
            "{name}: {} deletion(s) from an interrupted session took effect",
            plan.confirmed_deleted.len()
        );
        sc.store.set_state(
            sc.id,
            &plan.confirmed_deleted,
            &[MessageState::DeletePending],
            MessageState::Deleted,
        )?;
    }
    if !plan.undelete.is_empty() {
        sc.store.set_state(
            sc.id,
            &plan.undelete,
            &[MessageState::DeletePending],
            MessageState::Delivered,
        )?;
    }
    if !plan.mark_seen.is_empty() {
        sc.store.insert_seen(sc.id, &plan.mark_seen, now)?;
        sc.report.marked_seen += plan.mark_seen.len() as u64;
    }

    // Sizes (for the size rules, batching and progress) only when there is something new:
    // in the common case of nothing new, a large mailbox's LIST would be wasted work.
    let candidates: Vec<Listed<'_>> = plan.fetch.iter().chain(&plan.reconsider).copied().collect();
    let sizes: HashMap<MsgNum, u64> = if candidates.is_empty() {
        HashMap::new()
    } else {
        s.list().await?.iter().map(|e| (e.msg, e.size)).collect()
    };
    let reconsidered: std::collections::HashSet<&[u8]> =
        plan.reconsider.iter().map(|l| l.uid).collect();
    let split = plan::split_by_size(candidates, &sizes, &sc.policy);
    let too_big: Vec<(&[u8], Option<u64>)> = split
        .skip
        .iter()
        .filter(|(l, _)| !reconsidered.contains(l.uid))
        .map(|(l, size)| (l.uid, Some(*size)))
        .collect();
    if !too_big.is_empty() {
        sc.store
            .insert_with_state(sc.id, &too_big, MessageState::Oversize, now)?;
        sc.report.oversize_skipped += too_big.len() as u64;
        warn!(
            "{name}: {} message(s) over max-size stay on the server, not downloaded{}",
            too_big.len(),
            match too_big.iter().filter_map(|(_, s)| *s).max() {
                Some(m) => format!(" (the largest {})", crate::notify::human_size(m)),
                None => String::new(),
            }
        );
    }
    // Deleted without download: recorded as delete-pending first, like any deletion.
    let oversize_delete: Vec<Listed<'_>> = if plan.deletion_refused() {
        Vec::new()
    } else {
        split.delete.iter().map(|(l, _)| *l).collect()
    };
    if !oversize_delete.is_empty() {
        let rows: Vec<(&[u8], Option<u64>)> = split
            .delete
            .iter()
            .map(|(l, size)| (l.uid, Some(*size)))
            .collect();
        sc.store
            .insert_with_state(sc.id, &rows, MessageState::DeletePending, now)?;
        info!(
            "{name}: {} message(s) over max-size will be deleted without being downloaded (oversize = \"delete\")",
            oversize_delete.len()
        );
    }

    // Download. LIST sizes are the server's word (a hostile one may claim u64::MAX for every
    // message): they are added up saturating, never trusted to fit.
    let total: u64 = split
        .fetch
        .iter()
        .map(|l| sizes.get(&l.msg).copied().unwrap_or(0))
        .fold(0, u64::saturating_add);
    let count = split.fetch.len() + split.headers_only.len();
    if count > 0 {
        sc.ctx.progress.downloading(name, count, total);
    }
    let mut delivered_now: Vec<Listed<'_>> = Vec::new();
    let mut headers_only_now = 0u64;
    let mut refused: Vec<Status> = Vec::new();
    for (list, headers_only) in [(&split.fetch, false), (&split.headers_only, true)] {
        let mut remaining = &list[..];
        while !remaining.is_empty() {
            let mut n = 0;
            let mut bytes = 0;
            while n < remaining.len() && n < BATCH_MESSAGES && (n == 0 || bytes < BATCH_BYTES) {
                if !headers_only {
                    bytes =
                        bytes.saturating_add(sizes.get(&remaining[n].msg).copied().unwrap_or(0));
                }
                n += 1;
            }
            let (batch, rest) = remaining.split_at(n);
            remaining = rest;
            let outcome = fetch_batch(sc, &mut s, batch, headers_only, &sizes).await;
            if headers_only {
                headers_only_now += outcome.delivered.len() as u64;
                sc.report.headers_only += outcome.delivered.len() as u64;
            } else {
                delivered_now.extend(outcome.delivered);
            }
            refused.extend(outcome.refused);
            outcome.result?;
        }
    }
    let fetched = delivered_now.len() as u64 + headers_only_now;
    if fetched > 0 {
        info!(
            "{name}: stored {fetched} message(s) in {}",
            sc.account.delivery.describe()
        );
    }

    if sc.ctx.cancelled() {
        // Nothing was deleted in this session: the deletions wait for the next run.
        return Err(FetchError::Stopped);
    }

    // Delete what is due.
    let mut to_delete = if plan.deletion_refused() {
        Vec::new()
    } else {
        plan.delete.clone()
    };
    if !plan.deletion_refused() && plan::due_for_deletion(sc.policy.retention, Some(now), now) {
        to_delete.extend(delivered_now.iter().copied());
    }
    if sc.policy.retention == Retention::Keep {
        to_delete.clear();
    }
    // Messages too big to download, when the account asks for them to be deleted.
    to_delete.extend(oversize_delete.iter().copied());
    let mut dele_ok: Vec<&[u8]> = Vec::new();
    if !to_delete.is_empty() {
        let uids: Vec<&[u8]> = to_delete.iter().map(|l| l.uid).collect();
        sc.store.set_state(
            sc.id,
            &uids,
            &[MessageState::Delivered, MessageState::DeletePending],
            MessageState::DeletePending,
        )?;
        let msgs: Vec<MsgNum> = to_delete.iter().map(|l| l.msg).collect();
        failpoint::hit("delete-pending-committed");
        let answers = s.delete(&msgs).await?;
        failpoint::hit("dele-answered");
        for (listed, (_, status)) in to_delete.iter().zip(answers) {
            if status.is_ok() {
                dele_ok.push(listed.uid);
            } else {
                warn!(
                    "{name}: the server refused to delete message {}: {status}",
                    listed.msg
                );
            }
        }
    }
    // A server that refuses a new login for a while would refuse asking again for more.
    let login_delay = s.capabilities().login_delay.unwrap_or(0);
    s.quit().await?;
    failpoint::hit("quit-answered");
    if !dele_ok.is_empty() {
        sc.store.set_state(
            sc.id,
            &dele_ok,
            &[MessageState::DeletePending],
            MessageState::Deleted,
        )?;
        sc.report.deleted += dele_ok.len() as u64;
        info!(
            "{name}: deleted {} message(s) from the server",
            dele_ok.len()
        );
    }
    if let Some(first) = refused.first() {
        return Err(FetchError::Refused {
            count: refused.len() as u64,
            first: first.clone(),
        });
    }
    Ok(SessionOutcome {
        fetched,
        may_be_partial: plan.may_be_partial() && login_delay == 0,
    })
}
