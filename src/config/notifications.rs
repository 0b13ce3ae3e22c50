//! The keys that say what the agent tells the user, and what runs when new mail arrives.

use std::time::Duration;

use super::{DEFAULT_HOOK_TIMEOUT, QuietHours};
use crate::keys::{Checker, Layered, keys};

keys! {
    /// Notifications and the new-mail hook.
    pub struct NotificationKeys {
        /// Whether the agent shows desktop notifications for the account.
        notify: "notify" { default: "true", example: "false" },
        /// What the notification's "Open" action runs (program and arguments, no shell).
        open_command: "open-command" { default: "", example: "[\"thunderbird\"] or [\"foot\", \"neomutt\"]" },
        /// Daily hours during which notifications wait (fetching goes on).
        quiet_hours: "quiet-hours" { default: "", example: "\"22:00-07:00\"" },
        /// What runs after new mail was stored (program and arguments, no shell); it learns
        /// what happened from POPSYNC_ACCOUNT, POPSYNC_NEW_MESSAGES and POPSYNC_MAILDIR or
        /// POPSYNC_MBOX.
        on_new_mail: "on-new-mail" { default: "", example: "[\"notmuch\", \"new\"]" },
        /// How long on-new-mail may run before it is stopped.
        hook_timeout: "hook-timeout" { default: "\"1m\"", example: "\"2m\"" },
    }
}

/// What the user is told, and what runs.
#[derive(Debug, Clone)]
pub struct Notifications {
    /// Whether the agent shows desktop notifications for this account.
    pub notify: bool,
    /// What the notification's "Open" action runs (program and arguments).
    pub open_command: Option<Vec<String>>,
    /// Hours during which notifications are held back (fetching goes on).
    pub quiet_hours: Option<QuietHours>,
    /// What runs after new mail was stored (program and arguments).
    pub on_new_mail: Option<Vec<String>>,
    /// How long `on-new-mail` may run.
    pub hook_timeout: Duration,
}

pub fn read(c: &mut Checker<'_>, layers: &Layered<'_>) -> Notifications {
    let keys = NotificationKeys::take(layers);
    let hook_timeout = keys
        .hook_timeout
        .duration(c, DEFAULT_HOOK_TIMEOUT, Duration::from_secs(1));
    let (notify, _) = keys.notify.boolean(c, true);
    let open_command = keys.open_command.argv(c);
    let on_new_mail = keys.on_new_mail.argv(c);
    let quiet_hours = keys.quiet_hours.string(c).and_then(|(s, at)| {
        QuietHours::parse(s)
            .map_err(|e| c.problem(Some(at), Some("quiet-hours"), e))
            .ok()
    });
    Notifications {
        notify,
        open_command,
        quiet_hours,
        on_new_mail,
        hook_timeout,
    }
}
