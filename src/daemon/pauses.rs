//! Pauses: an account whose poll needs the user (a refused login, say) is left alone until
//! its configuration changes, `popsync poll` asks for it, or a long while has passed. The
//! pause is kept in the state database, so a restarted agent keeps it and does not tell the
//! user again; `popsync status` shows it.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::wording::{problem_title, problem_title_named};
use super::{Account, Agent, FetchError};
use crate::clock::{Clock, SystemClock};
use crate::scheduler::PollResult;
use crate::store::{Pause, Store};

impl Agent {
    /// Accounts paused before a restart stay paused, and the user is not told again —
    /// unless their configuration changed meanwhile.
    pub(super) fn resume_pauses(&mut self, mut store: Store) {
        let now = SystemClock.now();
        for account in &self.config.accounts {
            let Ok(Some(id)) = store.find_account(&account.name) else {
                continue;
            };
            let Ok(Some(pause)) = store.pause(id) else {
                continue;
            };
            if pause.config != account.login_digest() {
                info!(
                    "{}: its configuration changed since it was paused ({}): trying it again",
                    account.name, pause.problem
                );
                let _ = store.set_pause(id, None);
                continue;
            }
            let left = Duration::from_secs(pause.until.saturating_sub(now).max(0) as u64);
            info!(
                "{}: still paused ({}); tried again in {} or by `popsync poll --account {}`",
                account.name,
                pause.problem,
                crate::clock::span(left.as_secs()),
                account.name
            );
            self.schedule.pause(&account.name, Instant::now() + left);
            self.health
                .already_told(&account.name, problem_title_named(&pause.problem));
        }
    }

    /// Writes when the account is polled next (for `status`), and a pause, to the state
    /// database.
    pub(super) fn record_schedule(
        &self,
        account: &Account,
        now: Instant,
        result: PollResult,
        error: Option<&FetchError>,
    ) {
        let Some(due) = self.schedule.due(&account.name) else {
            return;
        };
        let wall_now = SystemClock.now();
        let wall = wall_now + (due.saturating_duration_since(now)).as_secs() as i64;
        let Ok(mut store) = Store::open(&self.config.state_dir) else {
            return;
        };
        let Ok(Some(id)) = store.find_account(&account.name) else {
            return;
        };
        let _ = store.set_next_poll(id, Some(wall));
        if let (PollResult::NeedsUser, Some(e)) = (result, error) {
            let pause = Pause {
                since: wall_now,
                until: wall,
                problem: problem_title(e).to_owned(),
                config: account.login_digest(),
            };
            if let Err(e) = store.set_pause(id, Some(&pause)) {
                warn!("could not record the pause: {e}");
            }
            info!(
                "paused until {} or `popsync poll --account {}`",
                crate::clock::span(due.saturating_duration_since(now).as_secs()),
                account.name
            );
        }
    }

    /// Polls `name` now, ending its pause (here and in the state database).
    pub(super) fn unpause(&mut self, name: &str, now: Instant) {
        let was_paused = self.schedule.is_paused(name);
        self.schedule.poll_now(name, now);
        if was_paused
            && let Ok(mut store) = Store::open(&self.config.state_dir)
            && let Ok(Some(id)) = store.find_account(name)
        {
            let _ = store.set_pause(id, None);
        }
    }
}
