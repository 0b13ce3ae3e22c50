//! The background agent: keeps every account fresh on its own schedule, announces new mail
//! with a desktop notification, tells the user about problems once, and answers to signals.
//!
//! - each account is polled every `interval` (see [`crate::scheduler`] for jitter, backoff and
//!   the pause after a refused login); never two polls of one account at once, at most
//!   `max-parallel` at a time; one account's trouble never holds up another;
//! - SIGTERM/SIGINT stop it within a few seconds, a running fetch included: fetches stop at
//!   the next message boundary and everything already stored stays stored (the fetch's own
//!   guarantees make even a kill safe);
//! - what it tells the user about trouble, and when, is in [`health`]: an outage once per
//!   server, a refused login at once; a refused login's pause is kept in the state database
//!   across restarts;
//! - SIGHUP reloads the configuration; a broken one is reported (log and notification) and
//!   the old one kept;
//! - SIGUSR1 (what `popsync poll` sends) polls now — the accounts named in the request
//!   files, or all — after reading the configuration again if its file was edited;
//! - the first polls after a start are told in one notification when several accounts
//!   brought mail;
//! - a wall clock running ahead of the monotonic one means the machine slept: everything is
//!   polled at once;
//! - under systemd it reports READY/STATUS/STOPPING and pings the watchdog, and keeps its
//!   state in `$STATE_DIRECTORY` (set by `StateDirectory=`) when neither `$POPSYNC_STATE_DIR`
//!   nor `state-dir` chooses a directory; `$LOGS_DIRECTORY` is not used: the log goes to
//!   stderr, which systemd hands to the journal;
//! - on Windows, Ctrl-C, Ctrl-Break and closing its console window stop it the same way.
//!
//! Fetches run on threads of their own (they block on disk and SQLite); notifications go out
//! through a task of their own (`notify::Courier`) and new-mail hooks through another
//! ([`hooks`]): the agent's own loop only waits, so a slow or silent notification server or
//! hook never holds up a poll, a request or a stop.

mod alarm;
pub mod control;
mod health;
mod hooks;
mod pauses;
pub mod sdnotify;
mod signals;
mod state_dir;
mod wording;

pub use wording::SIGN_IN_AGAIN;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::clock::SystemClock;
use crate::config::{Account, Config};
use crate::notify::{Courier, Note, Notifier};
use crate::poll::{
    self, Context, ErrorClass, FetchError, FetchOptions, NoProgress, Outcome, Problem,
};
use crate::scheduler::{PollResult, ResumeDetector, Schedule};
use crate::store::Store;
use signals::{Signal, Signals};

use alarm::Alarm;
use control::DaemonLock;
use health::{Event, Failure, Health, Member};
use hooks::Hooks;
use sdnotify::SdNotify;
use state_dir::with_systemd_state_dir;
use wording::{PLAIN_FAILURE, advice, as_user_writes, problem_title};

/// How long a stop waits for running fetches before leaving them (they are safe to kill).
pub const STOP_GRACE: Duration = Duration::from_secs(8);
/// How far the wall clock must run ahead to count as a sleep.
const RESUME_THRESHOLD: Duration = Duration::from_secs(60);

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot listen for signals")]
    Signals(#[source] std::io::Error),
    #[error("cannot set up the agent's timer")]
    Alarm(#[source] std::io::Error),
}

/// New mail held back during quiet hours.
#[derive(Debug, Default)]
struct Held {
    count: u64,
    newest: Vec<crate::summary::MessageSummary>,
}

/// How long the first polls after a start may take before their new mail is told anyway.
const FIRST_ROUND_LIMIT: Duration = Duration::from_secs(60);

/// The first poll of each account after the agent starts: their new mail is told in one
/// notification that sums them up, not one per account at once.
struct FirstRound {
    /// Accounts whose first poll has not ended.
    waiting: HashSet<String>,
    /// New mail of those that ended: account, count, newest, open-command.
    told: Vec<(Note, String, u64, Option<Vec<String>>)>,
    deadline: Instant,
}

/// The notification tag of a refused reload (the next good one takes it away).
const RELOAD_TAG: &str = "reload";

/// The configuration file as it was when last read, to notice an edit.
fn stamp(file: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(file).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

struct Agent {
    config: Config,
    config_stamp: Option<(SystemTime, u64)>,
    state_override: Option<PathBuf>,
    schedule: Schedule,
    health: Health,
    held: HashMap<String, Held>,
    first_round: Option<FirstRound>,
    /// Notifications go out through it, never awaited here.
    notes: Courier,
    /// The new-mail hook runs through it, never awaited here.
    hooks: Hooks,
    cancel: Arc<AtomicBool>,
    sd: SdNotify,
    polls: JoinSet<(String, Outcome)>,
}

/// Runs the agent until it is told to stop. `config` is already loaded (from `config.file`,
/// which SIGHUP reads again).
pub async fn run(config: Config, state_override: Option<PathBuf>) -> Result<(), DaemonError> {
    let config = with_systemd_state_dir(config, state_override.as_deref());
    let _lock = DaemonLock::acquire(&config.state_dir, &config.file)?;
    // Open (and migrate) the state database once up front, so a problem shows at start.
    let store = Store::open(&config.state_dir)?;
    let (notes, mut retried) = Courier::start(Arc::new(Notifier::new()));
    let mut agent = Agent {
        config_stamp: stamp(&config.file),
        schedule: Schedule::new(),
        health: Health::default(),
        held: HashMap::new(),
        first_round: None,
        notes,
        hooks: Hooks::start(),
        cancel: Arc::new(AtomicBool::new(false)),
        sd: SdNotify::from_env(),
        polls: JoinSet::new(),
        config,
        state_override,
    };
    let now = Instant::now();
    agent.schedule.set_accounts(&agent.intervals(), now);
    agent.resume_pauses(store);
    agent.first_round = Some(FirstRound {
        waiting: agent
            .config
            .accounts
            .iter()
            .filter(|a| !agent.schedule.is_paused(&a.name))
            .map(|a| a.name.clone())
            .collect(),
        told: Vec::new(),
        deadline: now + FIRST_ROUND_LIMIT,
    });
    let mut signals = Signals::new().map_err(DaemonError::Signals)?;
    let names: Vec<&str> = agent
        .config
        .accounts
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    info!(
        "popsync {} watching {} account(s): {}; config {}",
        env!("CARGO_PKG_VERSION"),
        names.len(),
        names.join(", "),
        agent.config.file.display()
    );
    agent
        .sd
        .ready(&format!("watching {} account(s)", names.len()));

    let mut resume = ResumeDetector::new(RESUME_THRESHOLD);
    resume.check(Instant::now(), SystemTime::now());
    let mut alarm = Alarm::new().map_err(DaemonError::Alarm)?;
    let watchdog_every = agent.sd.watchdog_interval();
    let mut watchdog_next = watchdog_every.map(|every| Instant::now() + every);

    loop {
        agent.start_due();
        let first_round_ends = agent.first_round.as_ref().map(|r| r.deadline);
        // One timer for everything the loop waits for: between polls the agent wakes only
        // for the next one (and the watchdog, under systemd).
        alarm.set(alarm::earliest([
            agent.schedule.next_due(),
            first_round_ends,
            watchdog_next,
        ]));
        tokio::select! {
            wake = alarm.wait() => {
                let now = Instant::now();
                if resume.check(now, SystemTime::now()) {
                    info!("the machine woke from sleep: polling every account now");
                    agent.schedule.resumed(now);
                }
                if first_round_ends.is_some_and(|t| t <= now) {
                    agent.end_first_round();
                }
                if let (Some(next), Some(every)) = (watchdog_next, watchdog_every)
                    && next <= now
                {
                    agent.sd.watchdog();
                    watchdog_next = Some(now + every);
                }
                #[cfg(not(unix))]
                if wake == alarm::Wake::Clock {
                    agent.poll_requested_quietly();
                }
                #[cfg(unix)]
                let _ = wake;
            }
            Some(done) = agent.polls.join_next(), if !agent.polls.is_empty() => {
                match done {
                    Ok((name, outcome)) => {
                        tracing::error_span!("account", name = name.as_str())
                            .in_scope(|| agent.finished(&name, outcome));
                    }
                    Err(e) => error!("a poll ended abnormally: {e}"),
                }
            }
            signal = signals.next() => match signal {
                Signal::Stop(name) => {
                    info!("{name}: stopping");
                    break;
                }
                Signal::Reload => agent.reload(),
                Signal::PollNow => agent.poll_requested(),
            },
            Some(accounts) = retried.recv() => agent.retry_clicked(&accounts),
        }
    }
    agent.stop().await;
    Ok(())
}

impl Agent {
    fn intervals(&self) -> Vec<(String, Duration)> {
        self.config
            .accounts
            .iter()
            .map(|a| (a.name.clone(), a.timing.interval))
            .collect()
    }

    fn account(&self, name: &str) -> Option<&Account> {
        self.config.accounts.iter().find(|a| a.name == name)
    }

    /// Starts the polls that are due, up to the parallel limit.
    fn start_due(&mut self) {
        let room = self.config.max_parallel.saturating_sub(self.polls.len());
        if room == 0 {
            return;
        }
        for name in self.schedule.take_due(Instant::now(), room) {
            let Some(account) = self.account(&name).cloned() else {
                continue;
            };
            let state_dir = self.config.state_dir.clone();
            let cancel = self.cancel.clone();
            self.polls.spawn_blocking(move || {
                let outcome = match poll::runtime() {
                    Ok(runtime) => runtime.block_on(async {
                        let clock = SystemClock;
                        let ctx = Context {
                            state_dir: &state_dir,
                            clock: &clock,
                            progress: &NoProgress,
                            connector: &crate::pop3::Tcp,
                            cancel: Some(&cancel),
                        };
                        let options = FetchOptions {
                            skip_hook: true,
                            ..FetchOptions::default()
                        };
                        poll::fetch_account(&account, &ctx, &options).await
                    }),
                    Err(e) => Outcome {
                        report: poll::Report {
                            account: account.name.clone(),
                            ..Default::default()
                        },
                        error: Some(e),
                    },
                };
                (account.name.clone(), outcome)
            });
        }
    }

    /// A poll ended: schedule the next, record it, tell the user what they should know.
    fn finished(&mut self, name: &str, outcome: Outcome) {
        let now = Instant::now();
        let result = match &outcome.error {
            None => PollResult::Ok,
            Some(FetchError::Stopped) => PollResult::Temporary { at_least: None },
            Some(e) => match e.class() {
                ErrorClass::Auth | ErrorClass::Config => PollResult::NeedsUser,
                ErrorClass::Temporary | ErrorClass::Local => PollResult::Temporary {
                    at_least: e.server_asks_to_wait(),
                },
            },
        };
        self.schedule.finished(name, result, now);
        let Some(account) = self.account(name).cloned() else {
            return;
        };
        self.record_schedule(&account, now, result, outcome.error.as_ref());
        let report = &outcome.report;
        match &outcome.error {
            None | Some(FetchError::Stopped) => {}
            Some(e) => warn!("{}", crate::error_chain(e)),
        }
        if report.renumbered > 0 && account.notifications.notify {
            self.notes.send(Note::info(
                format!("popsync: the server renumbered its mailbox — {}", account.name),
                &format!(
                    "{} message(s) popsync already had are listed under new unique-ids; none was downloaded again.",
                    crate::notify::thousands(report.renumbered)
                ),
            ));
        }
        self.hooks.new_mail(&account, report.new_messages);
        // Also when nothing is new: mail held back by quiet hours is announced after them.
        let note = self.new_mail_note(&account, report.new_messages, &report.newest);
        self.first_round_or_send(&account, note);
        self.track_health(&account, outcome.error.as_ref());
        self.sd.status(&self.status_line());
    }

    fn status_line(&self) -> String {
        let failing = self.health.failing();
        let polling = self.polls.len();
        format!(
            "{} account(s), {polling} polling now, {failing} failing",
            self.config.accounts.len()
        )
    }

    /// The new-mail notification for `count` new messages of `account` (with mail held
    /// back by quiet hours), unless it is to wait.
    fn new_mail_note(
        &mut self,
        account: &Account,
        count: u64,
        newest: &[crate::summary::MessageSummary],
    ) -> Option<(Note, u64)> {
        if !account.notifications.notify {
            return None;
        }
        if count == 0 && !self.held.contains_key(&account.name) {
            return None;
        }
        let held = self.held.entry(account.name.clone()).or_default();
        held.count += count;
        held.newest.extend_from_slice(newest);
        let excess = held
            .newest
            .len()
            .saturating_sub(crate::poll::SUMMARIES_KEPT);
        held.newest.drain(..excess);
        if quiet_now(account) {
            if count > 0 {
                info!(
                    "quiet hours: the notification for {} new message(s) waits",
                    held.count
                );
            }
            return None;
        }
        let held = self.held.remove(&account.name).unwrap_or_default();
        let note = Note::new_mail(
            &account.name,
            held.count,
            &held.newest,
            account.notifications.open_command.clone(),
        );
        Some((note, held.count))
    }

    /// Sends `note`, or, during the first polls after a start, keeps it for the one
    /// notification that sums them up.
    fn first_round_or_send(&mut self, account: &Account, note: Option<(Note, u64)>) {
        let Some(round) = &mut self.first_round else {
            if let Some((note, _)) = note {
                self.notes.send(note);
            }
            return;
        };
        let first = round.waiting.remove(&account.name);
        match note {
            Some((note, count)) if first => round.told.push((
                note,
                account.name.clone(),
                count,
                account.notifications.open_command.clone(),
            )),
            Some((note, _)) => self.notes.send(note),
            None => {}
        }
        if round.waiting.is_empty() {
            self.end_first_round();
        }
    }

    /// The first polls are over (or took too long): their new mail is told, in one
    /// notification when several accounts brought some.
    fn end_first_round(&mut self) {
        let Some(round) = self.first_round.take() else {
            return;
        };
        let mut told = round.told;
        // In the order of the configuration.
        let position = |name: &str| self.config.accounts.iter().position(|a| a.name == name);
        told.sort_by_key(|(_, name, ..)| position(name));
        if told.len() == 1 {
            let (note, ..) = told.remove(0);
            self.notes.send(note);
        } else if told.len() > 1 {
            let counts: Vec<(String, u64)> = told
                .iter()
                .map(|(_, name, n, _)| (name.clone(), *n))
                .collect();
            let open = told.iter().find_map(|(.., open)| open.clone());
            info!(
                "new mail in {} accounts since the start: one notification sums it up",
                counts.len()
            );
            self.notes.send(Note::first_start(&counts, open));
        }
    }

    fn track_health(&mut self, account: &Account, error: Option<&FetchError>) {
        let event = match error {
            None => Event::Ok,
            Some(FetchError::Stopped) => Event::Stopped,
            Some(e) => {
                let title = problem_title(e);
                Event::Failed(Failure {
                    title,
                    urgent: title != PLAIN_FAILURE,
                    detail: e.plainly(),
                    advice: advice(account, e, &self.config.file),
                    server_side: e.is_server_side(),
                })
            }
        };
        let server = server_of(account);
        let siblings_running = self.config.accounts.iter().any(|a| {
            a.name != account.name && server_of(a) == server && self.schedule.is_running(&a.name)
        });
        let member = Member {
            name: &account.name,
            server,
            notify: account.notifications.notify,
        };
        let verdict = self.health.finished(
            &member,
            &event,
            SystemTime::now(),
            self.config.notify_failure_after,
            siblings_running,
        );
        let now = Instant::now();
        for sibling in &verdict.retry {
            info!(
                "{}: its server answers again: trying {sibling} now",
                account.name
            );
            self.schedule.retry_now(sibling, now);
        }
        for note in verdict.notes {
            self.notes.send(note);
        }
    }

    /// SIGHUP: read the configuration again; keep the old one if the new one is broken.
    fn reload(&mut self) {
        self.sd.reloading();
        self.config_stamp = stamp(&self.config.file);
        match Config::load(&self.config.file, self.state_override.clone()) {
            Err(e) => {
                let text = crate::error_chain(&e);
                error!("the new configuration is not used ({text}); the old one stays in force");
                let first = match &e {
                    crate::config::ConfigError::Invalid(problems) if problems.len() > 1 => format!(
                        "{}\n(and {} more: `popsync check` lists them all)",
                        problems[0],
                        problems.len() - 1
                    ),
                    crate::config::ConfigError::Invalid(problems) if !problems.is_empty() => {
                        problems[0].to_string()
                    }
                    _ => text,
                };
                self.notes.send(
                    Note::problem(
                        "popsync: the configuration was not reloaded".to_owned(),
                        &format!(
                            "{first}\n\nThe configuration read before stays in force until {} is fixed.",
                            as_user_writes(&self.config.file)
                        ),
                    )
                    .tagged(RELOAD_TAG),
                );
            }
            Ok(new) => {
                let new = with_systemd_state_dir(new, self.state_override.as_deref());
                // TLS is set up again from the new `ca-file`s and the system's CA bundle as
                // it is now (the connectors of running polls stay theirs).
                crate::pop3::forget_connectors();
                if new.state_dir != self.config.state_dir {
                    warn!(
                        "the state directory changed to {}; that takes a restart (the old one, {}, stays in use)",
                        new.state_dir.display(),
                        self.config.state_dir.display()
                    );
                }
                let state_dir = self.config.state_dir.clone();
                let old = std::mem::replace(&mut self.config, Config { state_dir, ..new });
                let now = Instant::now();
                self.schedule.set_accounts(&self.intervals(), now);
                // A paused account whose own configuration changed is tried again (and
                // told again if it still fails).
                let changed: Vec<String> = self
                    .config
                    .accounts
                    .iter()
                    .filter(|a| {
                        old.accounts
                            .iter()
                            .any(|o| o.name == a.name && o.login_digest() != a.login_digest())
                    })
                    .map(|a| a.name.clone())
                    .collect();
                for name in changed {
                    self.health.forget(&name);
                    if self.schedule.is_paused(&name) {
                        info!("{name}: its configuration changed: trying it again now");
                        self.unpause(&name, now);
                    }
                }
                let config = &self.config;
                self.health
                    .retain(|name| config.accounts.iter().any(|a| a.name == name));
                self.notes.close(RELOAD_TAG);
                info!(
                    "configuration reloaded: {} account(s)",
                    self.config.accounts.len()
                );
            }
        }
        self.sd.ready(&self.status_line());
    }

    /// SIGUSR1: poll what the request files name, or everything. A configuration file
    /// edited since it was read is read again first (a fixed password, say, followed by
    /// `popsync poll`).
    fn poll_requested(&mut self) {
        if stamp(&self.config.file) != self.config_stamp {
            info!(
                "{} changed since it was read: reading it again",
                self.config.file.display()
            );
            self.reload();
        }
        let now = Instant::now();
        let names = match control::take_requests(&self.config.state_dir) {
            Some(names) if !names.is_empty() => names,
            _ => {
                info!("asked to poll every account now");
                let all: Vec<String> = self
                    .config
                    .accounts
                    .iter()
                    .map(|a| a.name.clone())
                    .collect();
                for n in &all {
                    self.unpause(n, now);
                }
                return;
            }
        };
        for n in names {
            if self.account(&n).is_some() {
                info!("{n}: asked to poll now");
                self.unpause(&n, now);
            } else {
                warn!("asked to poll {n:?}, which is not configured");
            }
        }
    }

    /// "Retry now" was clicked on a problem notification.
    fn retry_clicked(&mut self, accounts: &[String]) {
        let now = Instant::now();
        for n in accounts {
            if self.account(n).is_some() {
                // Asked in person: a failure again is told again.
                self.health.forget(n);
                self.unpause(n, now);
            }
        }
    }

    /// Where signals do not exist, requests are looked for now and then.
    #[cfg(not(unix))]
    fn poll_requested_quietly(&mut self) {
        if let Some(names) = control::take_requests(&self.config.state_dir)
            && !names.is_empty()
        {
            let now = Instant::now();
            for n in names {
                self.unpause(&n, now);
            }
        }
    }

    /// Stops: running fetches are asked to stop and given a few seconds.
    async fn stop(mut self) {
        self.sd.stopping();
        self.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = Instant::now() + STOP_GRACE;
        while !self.polls.is_empty() {
            match tokio::time::timeout_at(deadline, self.polls.join_next()).await {
                Ok(Some(Ok((name, outcome)))) => {
                    if outcome.report.new_messages > 0 {
                        info!(
                            "{name}: {} new message(s) stored before stopping",
                            outcome.report.new_messages
                        );
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    warn!(
                        "fetches still running after {}s are left unfinished (nothing is lost)",
                        STOP_GRACE.as_secs()
                    );
                    break;
                }
            }
        }
        info!("stopped");
    }
}

/// "host:port": accounts on one server share its outages.
fn server_of(account: &Account) -> String {
    format!("{}:{}", account.server.host, account.server.port)
}

fn quiet_now(account: &Account) -> bool {
    use chrono::Timelike;
    let Some(q) = account.notifications.quiet_hours else {
        return false;
    };
    let now = chrono::Local::now();
    q.contains((now.hour() * 60 + now.minute()) as u16)
}
