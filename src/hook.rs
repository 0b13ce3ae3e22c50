//! The new-mail hook: a program the user names (`on-new-mail = ["notmuch", "new"]`), run
//! after new mail has been committed to the mailbox.
//!
//! It is run as program and arguments, never through a shell, and nothing from the mail
//! reaches its command line: it learns what happened from its environment —
//! `POPSYNC_ACCOUNT`, `POPSYNC_NEW_MESSAGES`, and `POPSYNC_MAILDIR` or `POPSYNC_MBOX` (the
//! mailbox, if the mail went to one rather than an MDA). Its standard input is empty;
//! its output is collected (up to 64 KiB of each stream) and logged with its exit status. It
//! has a time limit, after which it is killed with everything it started (see `child`). A failing hook is reported, never fatal: the
//! mail is already stored.

use std::time::Duration;

use tracing::{info, warn};

use crate::child::{self, Ended};

/// What became of a hook run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// It ran; its exit status (as text) and whether it succeeded.
    Exited { success: bool, status: String },
    /// It ran past its time limit and was killed.
    TimedOut,
    /// It could not be started.
    NotStarted(String),
}

/// Runs `argv` for `account` after `new_messages` were stored by `delivery`.
pub async fn run_new_mail_hook(
    argv: &[String],
    account: &str,
    new_messages: u64,
    delivery: &crate::config::Delivery,
    limit: Duration,
) -> HookOutcome {
    let program = &argv[0];
    let mut spec = child::Spec::new(argv, Some(limit));
    if let Some((name, value)) = delivery.hook_env() {
        spec.env.push((name, value.into()));
    }
    spec.env.push(("POPSYNC_ACCOUNT", account.into()));
    spec.env
        .push(("POPSYNC_NEW_MESSAGES", new_messages.to_string().into()));
    match child::run_async(spec).await {
        Ended::NotStarted(e) => {
            warn!("on-new-mail {program:?} could not be started: {e}");
            HookOutcome::NotStarted(e.to_string())
        }
        Ended::TimedOut { .. } => {
            warn!(
                "on-new-mail {program:?} did not finish within {}s and was stopped",
                limit.as_secs()
            );
            HookOutcome::TimedOut
        }
        Ended::Exited {
            status,
            stdout,
            stderr,
        } => {
            let (out, err) = (child::text(&stdout), child::text(&stderr));
            if status.success() {
                info!("on-new-mail {program:?} finished ({status})");
            } else {
                warn!("on-new-mail {program:?} failed ({status})");
            }
            if !out.is_empty() {
                info!("on-new-mail output: {out}");
            }
            if !err.is_empty() {
                if status.success() {
                    info!("on-new-mail error output: {err}");
                } else {
                    warn!("on-new-mail error output: {err}");
                }
            }
            HookOutcome::Exited {
                success: status.success(),
                status: status.to_string(),
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn maildir(path: &str) -> crate::config::Delivery {
        crate::config::Delivery::new(crate::delivery::maildir::Settings { path: path.into() })
    }

    #[tokio::test]
    async fn the_hook_learns_what_happened_from_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let script = format!(
            "printf '%s|%s|%s' \"$POPSYNC_ACCOUNT\" \"$POPSYNC_NEW_MESSAGES\" \"$POPSYNC_MAILDIR\" > '{}'",
            out.display()
        );
        let r = run_new_mail_hook(
            &argv(&["sh", "-c", &script]),
            "home",
            3,
            &maildir("/m/home"),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(
            r,
            HookOutcome::Exited {
                success: true,
                status: "exit status: 0".into()
            }
        );
        assert_eq!(std::fs::read_to_string(out).unwrap(), "home|3|/m/home");
    }

    #[tokio::test]
    async fn a_hook_that_fails_hangs_or_is_missing_is_reported() {
        let m = &maildir("/m");
        let r = run_new_mail_hook(
            &argv(&["sh", "-c", "exit 4"]),
            "a",
            1,
            m,
            Duration::from_secs(10),
        )
        .await;
        assert!(
            matches!(r, HookOutcome::Exited { success: false, .. }),
            "{r:?}"
        );
        let t = std::time::Instant::now();
        let r = run_new_mail_hook(
            &argv(&["sleep", "30"]),
            "a",
            1,
            m,
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(r, HookOutcome::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(5));
        let r = run_new_mail_hook(
            &argv(&["/nonexistent/hook"]),
            "a",
            1,
            m,
            Duration::from_secs(1),
        )
        .await;
        assert!(matches!(r, HookOutcome::NotStarted(_)), "{r:?}");
    }
}
