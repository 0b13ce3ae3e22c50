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

pub use text::{escape_markup, human_size, new_mail_text, problem_text};

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
    /// The program the "Open" action runs.
    pub open_command: Option<Vec<String>>,
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
            open_command,
        }
    }

    /// A problem with `account` (or that it is working again).
    pub fn problem(account: &str, title: &str, detail: &str) -> Self {
        let (summary, body) = problem_text(account, title, detail);
        Self {
            summary,
            body,
            icon: "dialog-warning",
            category: "network.error",
            open_command: None,
        }
    }
}

impl Notifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Shows `note`. Returns whether it was shown; failures are logged here.
    pub async fn show(&self, note: Note) -> bool {
        match tokio::time::timeout(DEADLINE, platform::show(note)).await {
            Ok(Ok(())) => {
                if self.failing.swap(false, Ordering::SeqCst) {
                    info!("desktop notifications work again");
                }
                true
            }
            Ok(Err(e)) => {
                self.failed(&format!("desktop notification not shown: {e}"));
                false
            }
            Err(_) => {
                self.failed(&format!(
                    "desktop notification not shown: the notification server did not answer within {}s",
                    DEADLINE.as_secs()
                ));
                false
            }
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

/// Shows notifications on a task of its own, one after another, each with [`DEADLINE`].
#[derive(Debug, Clone)]
pub struct Courier {
    notes: tokio::sync::mpsc::Sender<Note>,
}

impl Courier {
    /// Starts the courier on the current runtime.
    pub fn start(notifier: Arc<Notifier>) -> Self {
        let (notes, mut queue) = tokio::sync::mpsc::channel::<Note>(QUEUE);
        tokio::spawn(async move {
            while let Some(note) = queue.recv().await {
                notifier.show(note).await;
            }
        });
        Self { notes }
    }

    /// Hands `note` over, without waiting. When [`QUEUE`] notes are already waiting for the
    /// notification server, this one is dropped and that is logged.
    pub fn send(&self, note: Note) {
        match self.notes.try_send(note) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(note)) => warn!(
                "desktop notification dropped, {QUEUE} are still waiting for the notification server: {}",
                note.summary
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
    use super::{ACTION_WINDOW, Note, run_open_command};
    use notify_rust::{Hint, Notification, NotificationResponse};
    use tracing::debug;

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

    pub async fn show(note: Note) -> Result<(), String> {
        let actions = note.open_command.is_some() && supports_actions().await?;
        let mut n = Notification::new();
        n.appname("popsync")
            .summary(&note.summary)
            .body(&note.body)
            .icon(note.icon)
            .hint(Hint::Category(note.category.to_owned()))
            .hint(Hint::DesktopEntry("popsync".to_owned()));
        if actions {
            // The default action: clicking the notification, or its "Open" button.
            n.action("default", "Open");
        }
        let handle = n.show_async().await.map_err(|e| e.to_string())?;
        if let (true, Some(argv)) = (actions, note.open_command) {
            tokio::spawn(async move {
                let wait = handle.wait_for_action_async(|response| {
                    // notify-rust reports the "default" action as `Default`, not as
                    // `Action("default")`.
                    if matches!(response, NotificationResponse::Default)
                        || matches!(response, NotificationResponse::Action(key) if key == "default")
                    {
                        run_open_command(&argv);
                    }
                });
                if tokio::time::timeout(ACTION_WINDOW, wait).await.is_err() {
                    debug!("stopped listening for the notification's Open action");
                }
            });
        }
        Ok(())
    }
}

#[cfg(any(not(unix), target_os = "macos"))]
mod platform {
    use super::Note;

    pub async fn show(note: Note) -> Result<(), String> {
        // The platform's own notification centre; no actions.
        tokio::task::spawn_blocking(move || {
            let mut n = notify_rust::Notification::new();
            n.appname("popsync").summary(&note.summary).body(&note.body);
            // Toasts carry popsync's AppUserModelID (`popsync service install` registers
            // it with its display name), so Windows attributes them to popsync.
            #[cfg(windows)]
            n.app_id(crate::service::windows::APP_ID);
            n.show().map(drop).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
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
