//! The background agent: keeps every account fresh on its own schedule, announces new mail
//! with a desktop notification, tells the user about problems once, and answers to signals.
//!
//! - each account is polled every `interval` (see [`crate::scheduler`] for jitter, backoff and
//!   the pause after a refused login); never two polls of one account at once, at most
//!   `max-parallel` at a time; one account's trouble never holds up another;
//! - SIGTERM/SIGINT stop it within a few seconds, a running fetch included: fetches stop at
//!   the next message boundary and everything already stored stays stored (the fetch's own
//!   guarantees make even a kill safe);
//! - SIGHUP reloads the configuration; a broken one is reported and the old one kept;
//! - SIGUSR1 (what `popsync poll` sends) polls now — the accounts named in the request
//!   files, or all;
//! - a wall clock running ahead of the monotonic one means the machine slept: everything is
//!   polled at once;
//! - under systemd it reports READY/STATUS/STOPPING and pings the watchdog, and keeps its
//!   state in `$STATE_DIRECTORY` (set by `StateDirectory=`) when neither `$POPSYNC_STATE_DIR`
//!   nor `state-dir` chooses a directory; `$LOGS_DIRECTORY` is not used: the log goes to
//!   stderr, which systemd hands to the journal;
//! - on Windows, Ctrl-C, Ctrl-Break and closing its console window stop it the same way.
//!
//! Fetches run on threads of their own (they block on disk and SQLite) and notifications
//! go out through a task of their own (`notify::Courier`): the agent's own loop only waits,
//! so a slow or silent notification server never holds up a poll, a request or a stop.

pub mod control;
pub mod sdnotify;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::clock::{Clock, SystemClock};
use crate::config::{Account, Config};
use crate::notify::{Courier, Note, Notifier};
use crate::poll::{
    self, Context, ErrorClass, FetchError, FetchOptions, NoProgress, Outcome, Problem,
};
use crate::scheduler::{PollResult, ResumeDetector, Schedule};
use crate::store::Store;

use control::DaemonLock;
use sdnotify::SdNotify;

/// How long a stop waits for running fetches before leaving them (they are safe to kill).
pub const STOP_GRACE: Duration = Duration::from_secs(8);
/// How often the clocks are compared to notice a sleep.
const RESUME_CHECK: Duration = Duration::from_secs(30);
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
}

/// What the agent remembers about an account's health, to tell the user about a problem
/// once and about its end once.
#[derive(Debug, Default)]
struct Health {
    /// The problem the user was told about (its title), if any.
    told: Option<&'static str>,
    failing_since: Option<SystemTime>,
}

/// New mail held back during quiet hours.
#[derive(Debug, Default)]
struct Held {
    count: u64,
    newest: Vec<crate::summary::MessageSummary>,
}

struct Agent {
    config: Config,
    state_override: Option<PathBuf>,
    schedule: Schedule,
    health: HashMap<String, Health>,
    held: HashMap<String, Held>,
    /// Notifications go out through it, never awaited here.
    notes: Courier,
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
    drop(Store::open(&config.state_dir)?);
    let mut agent = Agent {
        schedule: Schedule::new(),
        health: HashMap::new(),
        held: HashMap::new(),
        notes: Courier::start(Arc::new(Notifier::new())),
        cancel: Arc::new(AtomicBool::new(false)),
        sd: SdNotify::from_env(),
        polls: JoinSet::new(),
        config,
        state_override,
    };
    agent
        .schedule
        .set_accounts(&agent.intervals(), Instant::now());
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
    let mut resume_tick = tokio::time::interval(RESUME_CHECK);
    resume_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watchdog_every = agent
        .sd
        .watchdog_interval()
        .unwrap_or(Duration::from_secs(3600));
    let mut watchdog_tick = tokio::time::interval(watchdog_every);

    loop {
        agent.start_due();
        let next = agent.schedule.next_due();
        tokio::select! {
            _ = sleep_until(next) => {}
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
            _ = resume_tick.tick() => {
                if resume.check(Instant::now(), SystemTime::now()) {
                    info!("the machine woke from sleep: polling every account now");
                    agent.schedule.resumed(Instant::now());
                }
                #[cfg(not(unix))]
                agent.poll_requested_quietly();
            }
            _ = watchdog_tick.tick() => agent.sd.watchdog(),
        }
    }
    agent.stop().await;
    Ok(())
}

async fn sleep_until(when: Option<Instant>) {
    match when {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
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
                        poll::fetch_account(&account, &ctx, &FetchOptions::default()).await
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
        if let Some(due) = self.schedule.due(name) {
            let wall = SystemClock.now() + (due.saturating_duration_since(now)).as_secs() as i64;
            if let Ok(mut store) = Store::open(&self.config.state_dir)
                && let Ok(Some(id)) = store.find_account(name)
            {
                let _ = store.set_next_poll(id, Some(wall));
            }
        }
        let Some(account) = self.account(name).cloned() else {
            return;
        };
        let report = &outcome.report;
        match &outcome.error {
            None | Some(FetchError::Stopped) => {}
            Some(e) => warn!("{}", crate::error_chain(e)),
        }
        // Also when nothing is new: mail held back by quiet hours is announced after them.
        self.announce_new_mail(&account, report.new_messages, &report.newest);
        self.track_health(&account, outcome.error.as_ref());
        self.sd.status(&self.status_line());
    }

    fn status_line(&self) -> String {
        let failing = self
            .health
            .values()
            .filter(|h| h.failing_since.is_some())
            .count();
        let polling = self.polls.len();
        format!(
            "{} account(s), {polling} polling now, {failing} failing",
            self.config.accounts.len()
        )
    }

    fn announce_new_mail(
        &mut self,
        account: &Account,
        count: u64,
        newest: &[crate::summary::MessageSummary],
    ) {
        if !account.notifications.notify {
            return;
        }
        if count == 0 && !self.held.contains_key(&account.name) {
            return;
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
            if count == 0 {
                return;
            }
            info!(
                "quiet hours: the notification for {} new message(s) waits",
                held.count
            );
            return;
        }
        let held = self.held.remove(&account.name).unwrap_or_default();
        let note = Note::new_mail(
            &account.name,
            held.count,
            &held.newest,
            account.notifications.open_command.clone(),
        );
        self.notes.send(note);
    }

    fn track_health(&mut self, account: &Account, error: Option<&FetchError>) {
        let threshold = self.config.notify_failure_after;
        let health = self.health.entry(account.name.clone()).or_default();
        let note = match error {
            None => {
                health.failing_since = None;
                health.told.take().map(|_| {
                    Note::problem(
                        &account.name,
                        "popsync: working again",
                        "Mail is being fetched again.",
                    )
                })
            }
            Some(FetchError::Stopped) => None,
            Some(e) => {
                let since = *health.failing_since.get_or_insert_with(SystemTime::now);
                let title = problem_title(e);
                let long = SystemTime::now().duration_since(since).unwrap_or_default() >= threshold;
                // A refused login or an untrusted certificate needs the user now; other
                // trouble only once it has lasted.
                let urgent = title != PLAIN_FAILURE;
                if health.told != Some(title) && (urgent || long) {
                    health.told = Some(title);
                    Some(Note::problem(&account.name, title, &crate::error_chain(e)))
                } else {
                    None
                }
            }
        };
        if let Some(note) = note
            && account.notifications.notify
        {
            self.notes.send(note);
        }
    }

    /// SIGHUP: read the configuration again; keep the old one if the new one is broken.
    fn reload(&mut self) {
        self.sd.reloading();
        match Config::load(&self.config.file, self.state_override.clone()) {
            Err(e) => error!("the new configuration is not used ({e}); the old one stays in force"),
            Ok(new) => {
                let new = with_systemd_state_dir(new, self.state_override.as_deref());
                if new.state_dir != self.config.state_dir {
                    warn!(
                        "the state directory changed to {}; that takes a restart (the old one, {}, stays in use)",
                        new.state_dir.display(),
                        self.config.state_dir.display()
                    );
                }
                let state_dir = self.config.state_dir.clone();
                self.config = Config { state_dir, ..new };
                self.schedule
                    .set_accounts(&self.intervals(), Instant::now());
                self.health
                    .retain(|name, _| self.config.accounts.iter().any(|a| &a.name == name));
                info!(
                    "configuration reloaded: {} account(s)",
                    self.config.accounts.len()
                );
            }
        }
        self.sd.ready(&self.status_line());
    }

    /// SIGUSR1: poll what the request files name, or everything.
    fn poll_requested(&mut self) {
        let now = Instant::now();
        match control::take_requests(&self.config.state_dir) {
            None => {
                info!("asked to poll every account now");
                for a in &self.config.accounts {
                    self.schedule.poll_now(&a.name, now);
                }
            }
            Some(names) if names.is_empty() => {
                info!("asked to poll every account now");
                for a in &self.config.accounts {
                    self.schedule.poll_now(&a.name, now);
                }
            }
            Some(names) => {
                for n in names {
                    if self.account(&n).is_some() {
                        info!("{n}: asked to poll now");
                        self.schedule.poll_now(&n, now);
                    } else {
                        warn!("asked to poll {n:?}, which is not configured");
                    }
                }
            }
        }
    }

    /// Where signals do not exist, requests are looked for now and then.
    #[cfg(not(unix))]
    fn poll_requested_quietly(&mut self) {
        if let Some(names) = control::take_requests(&self.config.state_dir)
            && !names.is_empty()
        {
            for n in names {
                self.schedule.poll_now(&n, Instant::now());
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

/// Under systemd, `$STATE_DIRECTORY` (the first of its directories) takes the place of the
/// platform's default state directory: it is used when neither `$POPSYNC_STATE_DIR`
/// (`state_override`) nor the file's `state-dir` chose one.
fn with_systemd_state_dir(config: Config, state_override: Option<&std::path::Path>) -> Config {
    let default = crate::config::default_state_dir();
    match systemd_state_dir(
        std::env::var_os("STATE_DIRECTORY").as_deref(),
        state_override.is_some(),
        &config.state_dir,
        default.as_deref(),
    ) {
        Some(dir) => {
            info!(
                "state directory {} (systemd's $STATE_DIRECTORY); popsync commands run outside the service look in {} unless state-dir says otherwise",
                dir.display(),
                config.state_dir.display()
            );
            Config {
                state_dir: dir,
                ..config
            }
        }
        None => config,
    }
}

/// The directory `$STATE_DIRECTORY` (`var`) names, if it is to be used instead of
/// `state_dir`: only when nothing but the platform's default (`default`) chose that.
fn systemd_state_dir(
    var: Option<&std::ffi::OsStr>,
    overridden: bool,
    state_dir: &std::path::Path,
    default: Option<&std::path::Path>,
) -> Option<PathBuf> {
    if overridden || default != Some(state_dir) {
        return None;
    }
    // Several directories are separated by colons; popsync uses the first.
    let text = var?.to_str()?;
    let first = PathBuf::from(text.split(':').next()?);
    first.is_absolute().then_some(first)
}

fn problem_title(e: &FetchError) -> &'static str {
    match e.problem() {
        Problem::CertificateChanged => "popsync: the server's certificate has changed",
        Problem::CertificateUntrusted => "popsync: the server's certificate is not trusted",
        Problem::LoginRefused => "popsync: login refused",
        Problem::NoPassword => "popsync: no password",
        Problem::Misconfigured => "popsync: the account cannot work as configured",
        Problem::Other => PLAIN_FAILURE,
    }
}

/// The title of a problem that is told only once it has lasted `notify-failure-after`.
const PLAIN_FAILURE: &str = "popsync: cannot fetch mail";

fn quiet_now(account: &Account) -> bool {
    use chrono::Timelike;
    let Some(q) = account.notifications.quiet_hours else {
        return false;
    };
    let now = chrono::Local::now();
    q.contains((now.hour() * 60 + now.minute()) as u16)
}

// Reload and PollNow come from Unix signals; elsewhere only a stop exists.
#[cfg_attr(not(unix), allow(dead_code))]
enum Signal {
    Stop(&'static str),
    Reload,
    PollNow,
}

#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.hup.recv() => Signal::Reload,
            _ = self.usr1.recv() => Signal::PollNow,
        }
    }
}

/// Ctrl-C, Ctrl-Break and the console window being closed. (Windows sends the logoff and
/// shutdown events only to services; an interactive program is simply ended then, which is
/// safe.) After a close event Windows ends the process a few seconds later whatever it does:
/// a fetch cut short there is as safe as a kill.
#[cfg(windows)]
struct Signals {
    c: tokio::signal::windows::CtrlC,
    brk: tokio::signal::windows::CtrlBreak,
    close: tokio::signal::windows::CtrlClose,
}

#[cfg(windows)]
impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close};
        Ok(Self {
            c: ctrl_c()?,
            brk: ctrl_break()?,
            close: ctrl_close()?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.c.recv() => Signal::Stop("Ctrl-C"),
            _ = self.brk.recv() => Signal::Stop("Ctrl-Break"),
            _ = self.close.recv() => Signal::Stop("the console window closing"),
        }
    }
}

#[cfg(not(any(unix, windows)))]
struct Signals;

#[cfg(not(any(unix, windows)))]
impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self)
    }

    async fn next(&mut self) -> Signal {
        let _ = tokio::signal::ctrl_c().await;
        Signal::Stop("Ctrl-C")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::path::Path;

    #[test]
    fn state_directory_replaces_only_the_default_state_dir() {
        let default = Path::new("/home/me/.local/state/popsync");
        let var = Some(OsStr::new(
            "/home/me/.config/popsync:/home/me/.config/other",
        ));
        assert_eq!(
            systemd_state_dir(var, false, default, Some(default)),
            Some(PathBuf::from("/home/me/.config/popsync"))
        );
        // state-dir in the file, or $POPSYNC_STATE_DIR, win.
        assert_eq!(
            systemd_state_dir(var, false, Path::new("/srv/popsync"), Some(default)),
            None
        );
        assert_eq!(systemd_state_dir(var, true, default, Some(default)), None);
        // Not under systemd, or nonsense.
        assert_eq!(systemd_state_dir(None, false, default, Some(default)), None);
        assert_eq!(
            systemd_state_dir(Some(OsStr::new("relative")), false, default, Some(default)),
            None
        );
    }
}
