//! Desktop notifications: one per account per poll for new mail, and one per problem until
//! it clears.
//!
//! The agent hands notifications to a [`Courier`], which shows them one after another on a
//! task of its own: whatever the notification server does — answer slowly, never answer,
//! vanish — the agent's own loop never waits for it, so polls, `popsync poll` requests and
//! a stop are never held up by a notification.
//!
//! Only messages already committed to the mailbox are announced. Sender and subject come
//! from the headers captured while the message streamed (decoded with a MIME parser), and
//! are escaped for the body markup notification servers apply (`&`, `<`, `>`). Every call
//! to the notification server has a deadline — a server that never answers would otherwise
//! block forever — and a failure is logged (once, until notifications work again), never
//! fatal: fetching carries on.
//!
//! On Linux and the BSDs notifications go over the D-Bus session bus
//! (`org.freedesktop.Notifications`), with the hints `category=email.arrived` and
//! `desktop-entry=popsync` and an "Open" action when the server supports actions.

mod text;

pub use text::{escape_markup, first_start_text, human_size, new_mail_text, thousands};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::summary::MessageSummary;

/// How long a call to the notification server may take.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// How long a notification's "Open" action is listened for.
pub const ACTION_WINDOW: Duration = Duration::from_secs(3600);

/// Shows desktop notifications.
#[derive(Debug, Default)]
pub struct Notifier {
    /// A failure was logged; further ones are logged at debug level until one succeeds.
    failing: AtomicBool,
}

/// What a notification is about.
#[derive(Debug, Clone)]
pub struct Note {
    pub summary: String,
    /// Body text, already escaped for markup.
    pub body: String,
    pub icon: &'static str,
    pub category: &'static str,
    /// What clicking it (or its button) does, where the notification server shows actions.
    pub action: Option<Action>,
    /// Notes with the same tag replace one another on screen (`replaces_id`): the news that
    /// a problem has ended takes the place of the problem.
    pub tag: Option<String>,
}

/// What a notification's action does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// "Open": runs the mail client (the account's `open-command`).
    Open(Vec<String>),
    /// "Retry now": polls these accounts at once.
    Retry(Vec<String>),
}

impl Note {
    /// New mail for `account`: `count` messages, `newest` of them summarised.
    pub fn new_mail(
        account: &str,
        count: u64,
        newest: &[MessageSummary],
        open_command: Option<Vec<String>>,
    ) -> Self {
        let (summary, body) = new_mail_text(account, count, newest);
        Self {
            summary,
            body,
            icon: "mail-message-new",
            category: "email.arrived",
            action: open_command.map(Action::Open),
            tag: None,
        }
    }

    /// The first polls after the agent started, summed up: `accounts` with their counts.
    pub fn first_start(accounts: &[(String, u64)], open_command: Option<Vec<String>>) -> Self {
        let (summary, body) = first_start_text(accounts);
        Self {
            summary,
            body,
            icon: "mail-message-new",
            category: "email.arrived",
            action: open_command.map(Action::Open),
            tag: None,
        }
    }

    /// A problem: `summary` as it is, `detail` (plain text) as the body.
    pub fn problem(summary: String, detail: &str) -> Self {
        Self {
            summary,
            body: escape_markup(detail),
            icon: "dialog-warning",
            category: "network.error",
            action: None,
            tag: None,
        }
    }

    /// Something the user should know that needs nothing of them.
    pub fn info(summary: String, detail: &str) -> Self {
        Self {
            summary,
            body: escape_markup(detail),
            icon: "dialog-information",
            category: "email",
            action: None,
            tag: None,
        }
    }

    /// Good news after a problem: the same look as other good news, no warning sign.
    pub fn all_clear(summary: String, detail: &str) -> Self {
        Self {
            summary,
            body: escape_markup(detail),
            icon: "mail-send-receive",
            category: "network.connected",
            action: None,
            tag: None,
        }
    }

    /// The same note, replacing whatever was last shown with `tag`.
    pub fn tagged(self, tag: impl Into<String>) -> Self {
        Self {
            tag: Some(tag.into()),
            ..self
        }
    }

    /// The same note, with `action`.
    pub fn with_action(self, action: Action) -> Self {
        Self {
            action: Some(action),
            ..self
        }
    }
}

impl Notifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Shows `note`, in place of the notification `replaces` (0: none). Returns the id the
    /// notification server gave it, if it was shown; failures are logged here. A "Retry
    /// now" action sends its accounts to `retries`.
    pub async fn show(&self, note: Note, replaces: u32, retries: &Retries) -> Option<u32> {
        let summary = note.summary.clone();
        match tokio::time::timeout(DEADLINE, platform::show(note, replaces, retries.clone())).await
        {
            Ok(Ok(id)) => {
                if self.failing.swap(false, Ordering::SeqCst) {
                    info!("desktop notifications work again");
                }
                debug!("notification {id} shown: {summary}");
                Some(id)
            }
            Ok(Err(e)) => {
                self.failed(&format!("desktop notification not shown: {e}"));
                None
            }
            Err(_) => {
                self.failed(&format!(
                    "desktop notification not shown: the notification server did not answer within {}s",
                    DEADLINE.as_secs()
                ));
                None
            }
        }
    }

    /// Takes the notification `id` off the screen (failures only logged at debug level: it
    /// may be gone already).
    pub async fn close(&self, id: u32) {
        match tokio::time::timeout(DEADLINE, platform::close(id)).await {
            Ok(Ok(())) => debug!("notification {id} closed"),
            Ok(Err(e)) => debug!("notification {id} not closed: {e}"),
            Err(_) => debug!("notification {id} not closed: no answer"),
        }
    }

    fn failed(&self, message: &str) {
        if self.failing.swap(true, Ordering::SeqCst) {
            debug!("{message}");
        } else {
            warn!("{message} (mail is still fetched; further failures are logged at debug level)");
        }
    }
}

/// At most this many notifications wait for the notification server; more are dropped (and
/// logged): a server that answers nothing must not make the agent hold on to notes without
/// end.
pub const QUEUE: usize = 16;

/// Where "Retry now" sends the accounts to poll.
pub type Retries = tokio::sync::mpsc::Sender<Vec<String>>;

/// What the courier is asked to do.
#[derive(Debug)]
enum Order {
    Show(Note),
    /// Take the notification last shown with this tag off the screen.
    Close(String),
}

/// Shows notifications on a task of its own, one after another, each with [`DEADLINE`].
/// It remembers the id of the last notification shown with each tag, so that a later one
/// with the tag replaces it.
#[derive(Debug, Clone)]
pub struct Courier {
    orders: tokio::sync::mpsc::Sender<Order>,
}

impl Courier {
    /// Starts the courier on the current runtime. The receiver gets the accounts of every
    /// "Retry now" the user clicks.
    pub fn start(notifier: Arc<Notifier>) -> (Self, tokio::sync::mpsc::Receiver<Vec<String>>) {
        let (orders, mut queue) = tokio::sync::mpsc::channel::<Order>(QUEUE);
        let (retries, retried) = tokio::sync::mpsc::channel(QUEUE);
        tokio::spawn(async move {
            let mut shown: std::collections::HashMap<String, u32> = Default::default();
            while let Some(order) = queue.recv().await {
                match order {
                    Order::Show(note) => {
                        let tag = note.tag.clone();
                        let replaces = tag.as_ref().and_then(|t| shown.get(t)).copied();
                        let id = notifier.show(note, replaces.unwrap_or(0), &retries).await;
                        if let (Some(tag), Some(id)) = (tag, id) {
                            shown.insert(tag, id);
                        }
                    }
                    Order::Close(tag) => {
                        if let Some(id) = shown.remove(&tag) {
                            notifier.close(id).await;
                        }
                    }
                }
            }
        });
        (Self { orders }, retried)
    }

    /// Hands `note` over, without waiting. When [`QUEUE`] orders are already waiting for the
    /// notification server, this one is dropped and that is logged.
    pub fn send(&self, note: Note) {
        self.order(Order::Show(note));
    }

    /// Takes the notification last shown with `tag` off the screen, if it is there.
    pub fn close(&self, tag: &str) {
        self.order(Order::Close(tag.to_owned()));
    }

    fn order(&self, order: Order) {
        match self.orders.try_send(order) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(order)) => warn!(
                "desktop notification dropped, {QUEUE} are still waiting for the notification server: {}",
                match order {
                    Order::Show(note) => note.summary,
                    Order::Close(tag) => format!("closing {tag}"),
                }
            ),
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// What starts the "Open" command. Under a systemd service manager (`INVOCATION_ID` is set
/// for every unit it runs) the mail client gets a transient unit of its own through
/// `systemd-run --user`: it then neither inherits the agent's hardening nor stops when the
/// agent's service is stopped or restarted. Otherwise the command runs as it is.
#[cfg(all(unix, not(target_os = "macos")))]
fn open_command_line(argv: &[String], under_systemd: bool, systemd_run: bool) -> Vec<String> {
    if under_systemd && systemd_run {
        let mut out: Vec<String> = ["systemd-run", "--user", "--collect", "--quiet", "--"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        out.extend(argv.iter().cloned());
        out
    } else {
        argv.to_vec()
    }
}

/// Whether a program is found in `PATH`.
#[cfg(all(unix, not(target_os = "macos")))]
fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Runs the "Open" command, on a thread of its own, logging what actually happened.
#[cfg(all(unix, not(target_os = "macos")))]
fn run_open_command(argv: &[String]) {
    let argv = argv.to_vec();
    std::thread::spawn(move || open_mail(&argv));
}

/// How long `systemd-run` may take to start the mail client's unit.
#[cfg(all(unix, not(target_os = "macos")))]
const SYSTEMD_RUN_LIMIT: Duration = Duration::from_secs(15);

/// Opens the mail client: under systemd in a unit of its own if `systemd-run` manages it,
/// else (or when it fails) directly.
#[cfg(all(unix, not(target_os = "macos")))]
fn open_mail(argv: &[String]) {
    use crate::child::{self, Ended, Spec};
    let under_systemd = std::env::var_os("INVOCATION_ID").is_some();
    if under_systemd && in_path("systemd-run") {
        let line = open_command_line(argv, true, true);
        let spec = Spec {
            capture_stdout: false,
            ..Spec::new(&line, Some(SYSTEMD_RUN_LIMIT))
        };
        let why = match child::run(spec) {
            Ended::Exited { status, .. } if status.success() => {
                info!(
                    "opened mail with {:?} in a unit of its own (systemd-run)",
                    argv[0]
                );
                return;
            }
            Ended::Exited { status, stderr, .. } => {
                let said = child::text(&stderr);
                if said.is_empty() {
                    format!("systemd-run failed ({status})")
                } else {
                    format!("systemd-run failed ({status}): {said}")
                }
            }
            Ended::TimedOut { .. } => format!(
                "systemd-run did not finish within {}s",
                SYSTEMD_RUN_LIMIT.as_secs()
            ),
            Ended::NotStarted(e) => format!("systemd-run could not be run: {e}"),
        };
        warn!("{why}; starting {:?} directly", argv[0]);
    }
    let spec = Spec {
        capture_stdout: false,
        capture_stderr: false,
        ..Spec::new(argv, None)
    };
    match child::spawn(spec) {
        Ok(running) => {
            info!("opened mail with {:?} (process {})", argv[0], running.id());
            // Reaped whenever it ends; nothing waits for it.
            running.wait();
        }
        Err(e) => warn!("open-command {:?} could not be started: {e}", argv[0]),
    }
}

#[cfg(all(unix, not(target_os = "macos")))]
mod platform {
    use super::{ACTION_WINDOW, Action, Note, Retries, run_open_command};
    use notify_rust::{Hint, Notification};
    use tracing::{debug, info};

    /// Whether the notification server shows action buttons.
    async fn supports_actions() -> Result<bool, String> {
        let conn = zbus::Connection::session()
            .await
            .map_err(|e| format!("no D-Bus session bus: {e}"))?;
        let reply = conn
            .call_method(
                Some("org.freedesktop.Notifications"),
                "/org/freedesktop/Notifications",
                Some("org.freedesktop.Notifications"),
                "GetCapabilities",
                &(),
            )
            .await
            .map_err(|e| format!("no notification server: {e}"))?;
        let caps: Vec<String> = reply
            .body()
            .deserialize()
            .map_err(|e| format!("odd answer to GetCapabilities: {e}"))?;
        Ok(caps.iter().any(|c| c == "actions"))
    }

    pub async fn show(note: Note, replaces: u32, retries: Retries) -> Result<u32, String> {
        let actions = note.action.is_some() && supports_actions().await?;
        let mut n = Notification::new();
        n.appname("popsync")
            .summary(&note.summary)
            .body(&note.body)
            .icon(note.icon)
            .hint(Hint::Category(note.category.to_owned()))
            .hint(Hint::DesktopEntry("popsync".to_owned()));
        if replaces != 0 {
            n.id(replaces);
        }
        match (&note.action, actions) {
            // The default action: clicking the notification, or its button.
            (Some(Action::Open(_)), true) => {
                n.action("default", "Open");
            }
            (Some(Action::Retry(_)), true) => {
                n.action("default", "Retry now");
            }
            _ => {}
        }
        // Listening starts before the notification is shown: a click that comes at once
        // (before a listener started after it would be in place) is not lost.
        let clicks = if actions {
            Some(action_signals().await?)
        } else {
            None
        };
        let handle = n.show_async().await.map_err(|e| e.to_string())?;
        let id = handle.id();
        if let (Some(mut clicks), Some(action)) = (clicks, note.action) {
            tokio::spawn(async move {
                use futures_util::StreamExt as _;
                let wait = async {
                    while let Some(Ok(message)) = clicks.next().await {
                        let header = message.header();
                        match header.member().map(|m| m.as_str()) {
                            Some("ActionInvoked") => {
                                let Ok((of, key)) = message.body().deserialize::<(u32, String)>()
                                else {
                                    continue;
                                };
                                if of != id || key != "default" {
                                    continue;
                                }
                                match &action {
                                    Action::Open(argv) => run_open_command(argv),
                                    Action::Retry(accounts) => {
                                        info!(
                                            "\"Retry now\" clicked: polling {}",
                                            accounts.join(", ")
                                        );
                                        let _ = retries.try_send(accounts.clone());
                                    }
                                }
                                return;
                            }
                            Some("NotificationClosed") => {
                                if let Ok((of, _)) = message.body().deserialize::<(u32, u32)>()
                                    && of == id
                                {
                                    return;
                                }
                            }
                            _ => {}
                        }
                    }
                };
                if tokio::time::timeout(ACTION_WINDOW, wait).await.is_err() {
                    debug!("stopped listening for the notification's action");
                }
            });
        }
        Ok(id)
    }

    /// The notification server's signals (an action invoked, a notification closed), from
    /// now on.
    async fn action_signals() -> Result<zbus::MessageStream, String> {
        let conn = zbus::Connection::session()
            .await
            .map_err(|e| format!("no D-Bus session bus: {e}"))?;
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.Notifications")
            .path("/org/freedesktop/Notifications")
            .build()
            .map_err(|e| e.to_string())?;
        zbus::MessageStream::for_match_rule(rule, &conn, std::num::NonZeroUsize::new(16))
            .await
            .map_err(|e| e.to_string())
    }

    pub async fn close(id: u32) -> Result<(), String> {
        let conn = zbus::Connection::session()
            .await
            .map_err(|e| format!("no D-Bus session bus: {e}"))?;
        conn.call_method(
            Some("org.freedesktop.Notifications"),
            "/org/freedesktop/Notifications",
            Some("org.freedesktop.Notifications"),
            "CloseNotification",
            &(id,),
        )
        .await
        .map(drop)
        .map_err(|e| e.to_string())
    }
}

#[cfg(any(not(unix), target_os = "macos"))]
mod platform {
    use super::{Note, Retries};

    pub async fn show(note: Note, _replaces: u32, _retries: Retries) -> Result<u32, String> {
        // The platform's own notification centre; no actions, nothing to replace.
        tokio::task::spawn_blocking(move || {
            let mut n = notify_rust::Notification::new();
            n.appname("popsync").summary(&note.summary).body(&note.body);
            // Toasts carry popsync's AppUserModelID (`popsync service install` registers
            // it with its display name), so Windows attributes them to popsync.
            #[cfg(windows)]
            n.app_id(crate::service::windows::APP_ID);
            n.show().map(|_| 0).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    pub async fn close(_id: u32) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(all(test, unix, not(target_os = "macos")))]
mod tests {
    use super::*;

    #[test]
    fn under_systemd_the_mail_client_gets_a_unit_of_its_own() {
        let argv: Vec<String> = vec!["thunderbird".into(), "-mail".into()];
        assert_eq!(
            open_command_line(&argv, true, true),
            [
                "systemd-run",
                "--user",
                "--collect",
                "--quiet",
                "--",
                "thunderbird",
                "-mail"
            ]
        );
        assert_eq!(open_command_line(&argv, false, true), argv);
        assert_eq!(open_command_line(&argv, true, false), argv);
    }
}
