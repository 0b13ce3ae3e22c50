//! When each account is polled next: per-account intervals with jitter, backoff by error
//! class, a pause after a refused login, and the signs of a machine that slept.
//!
//! This is pure bookkeeping over `tokio::time::Instant`, so the tests drive it with tokio's
//! paused clock. The rules:
//!
//! - after a good poll, the next is one `interval` later plus a little jitter (up to a tenth
//!   of the interval, at most 30 s), so that accounts on one server spread out;
//! - after a temporary failure (network, busy server), the next attempt comes after 30 s,
//!   then 1, 2, 4 ... minutes, never later than `max(interval, 30 min)`; a server that asked
//!   for a delay (`[LOGIN-DELAY]`) gets at least that;
//! - after a refused login or a configuration the server cannot work with, the account is
//!   paused: retried only every 6 hours, until the user asks for a poll (the agent also ends
//!   the pause when that account's configuration changes);
//! - when one account on a server gets through after an outage, the agent has the others
//!   waiting in backoff tried at once (`retry_now`);
//! - an account is never polled twice at once; a poll asked for while one runs is queued.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::time::Instant;

/// First wait after a temporary failure.
pub const BACKOFF_START: Duration = Duration::from_secs(30);
/// The longest a temporary failure delays the next attempt (or the interval, if longer).
pub const BACKOFF_CAP: Duration = Duration::from_secs(30 * 60);
/// How often a paused account (refused login) is tried anyway.
pub const PAUSED_RETRY: Duration = Duration::from_secs(6 * 3600);
/// Jitter: at most this, and at most a tenth of the interval.
pub const MAX_JITTER: Duration = Duration::from_secs(30);

/// How a poll ended, as far as scheduling is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollResult {
    Ok,
    /// Try again soon; `at_least` if the server asked for a delay.
    Temporary {
        at_least: Option<Duration>,
    },
    /// Retrying will not help until something changes (login refused, certificate, config).
    NeedsUser,
}

#[derive(Debug, Clone)]
struct Slot {
    interval: Duration,
    due: Instant,
    running: bool,
    /// A poll was asked for while one was running.
    queued: bool,
    failures: u32,
    paused: bool,
}

/// The schedule of all accounts.
#[derive(Debug, Default)]
pub struct Schedule {
    slots: HashMap<String, Slot>,
    rng: u64,
}

impl Schedule {
    pub fn new() -> Self {
        Self {
            slots: HashMap::new(),
            rng: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
                | 1,
        }
    }

    /// Adds or updates accounts (a config reload): new ones are due now, known ones keep
    /// their timing (a paused one stays paused: the agent ends a pause when that account's
    /// own configuration changed) but take the new interval; accounts no longer configured
    /// are dropped.
    pub fn set_accounts(&mut self, accounts: &[(String, Duration)], now: Instant) {
        self.slots
            .retain(|name, _| accounts.iter().any(|(n, _)| n == name));
        for (name, interval) in accounts {
            match self.slots.get_mut(name) {
                Some(slot) => {
                    if slot.interval != *interval && !slot.running && !slot.paused {
                        slot.due = slot.due.min(now + *interval);
                    }
                    slot.interval = *interval;
                }
                None => {
                    self.slots.insert(
                        name.clone(),
                        Slot {
                            interval: *interval,
                            due: now,
                            running: false,
                            queued: false,
                            failures: 0,
                            paused: false,
                        },
                    );
                }
            }
        }
    }

    /// Pauses `account` until `until` (a pause the state database remembered from before a
    /// restart).
    pub fn pause(&mut self, account: &str, until: Instant) {
        if let Some(slot) = self.slots.get_mut(account) {
            slot.paused = true;
            slot.failures = slot.failures.max(1);
            if !slot.running {
                slot.due = until;
            }
        }
    }

    /// Another account on the same server got through: `account`, if it is waiting in
    /// backoff after a temporary failure, is tried now.
    pub fn retry_now(&mut self, account: &str, now: Instant) {
        if let Some(slot) = self.slots.get_mut(account)
            && slot.failures > 0
            && !slot.paused
            && !slot.running
        {
            slot.due = slot.due.min(now);
        }
    }

    pub fn is_running(&self, account: &str) -> bool {
        self.slots.get(account).is_some_and(|s| s.running)
    }

    /// Accounts due at `now` that are not running, marked running. Takes at most `limit`.
    pub fn take_due(&mut self, now: Instant, limit: usize) -> Vec<String> {
        let mut due: Vec<(&String, &Slot)> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.running && s.due <= now)
            .collect();
        due.sort_by_key(|(_, s)| s.due);
        let names: Vec<String> = due
            .into_iter()
            .take(limit)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &names {
            if let Some(s) = self.slots.get_mut(n) {
                s.running = true;
            }
        }
        names
    }

    /// When the next account falls due (if any is waiting).
    pub fn next_due(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter(|s| !s.running)
            .map(|s| s.due)
            .min()
    }

    /// When `account` is due next, if it is not running.
    pub fn due(&self, account: &str) -> Option<Instant> {
        self.slots
            .get(account)
            .filter(|s| !s.running)
            .map(|s| s.due)
    }

    pub fn is_paused(&self, account: &str) -> bool {
        self.slots.get(account).is_some_and(|s| s.paused)
    }

    /// Records how a poll ended and schedules the next.
    pub fn finished(&mut self, account: &str, result: PollResult, now: Instant) {
        let jitter = self.jitter_for(account);
        let Some(slot) = self.slots.get_mut(account) else {
            return;
        };
        slot.running = false;
        let wait = match result {
            PollResult::Ok => {
                slot.failures = 0;
                slot.paused = false;
                slot.interval + jitter
            }
            PollResult::Temporary { at_least } => {
                slot.failures = slot.failures.saturating_add(1);
                let exp = BACKOFF_START.saturating_mul(1u32 << (slot.failures - 1).min(16));
                let cap = BACKOFF_CAP.max(slot.interval);
                exp.min(cap).max(at_least.unwrap_or_default())
            }
            PollResult::NeedsUser => {
                slot.failures = slot.failures.saturating_add(1);
                slot.paused = true;
                PAUSED_RETRY
            }
        };
        slot.due = if std::mem::take(&mut slot.queued) {
            now
        } else {
            now + wait
        };
    }

    /// The user asked for a poll: due now (queued if one is running); unpauses.
    pub fn poll_now(&mut self, account: &str, now: Instant) {
        if let Some(slot) = self.slots.get_mut(account) {
            slot.paused = false;
            if slot.running {
                slot.queued = true;
            } else {
                slot.due = now;
            }
        }
    }

    /// The machine woke up: every account that is not paused is due now.
    pub fn resumed(&mut self, now: Instant) {
        for slot in self.slots.values_mut() {
            if !slot.paused && !slot.running {
                slot.due = now;
            }
        }
    }

    fn jitter_for(&mut self, account: &str) -> Duration {
        let Some(slot) = self.slots.get(account) else {
            return Duration::ZERO;
        };
        let max = (slot.interval / 10).min(MAX_JITTER);
        // xorshift64: plenty for spreading polls out.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let nanos = max.as_nanos() as u64;
        if nanos == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.rng % nanos)
        }
    }
}

/// Notices a machine that slept: monotonic timers stop during suspend, the wall clock does
/// not. Feed it both clocks now and then; it says when the wall clock ran ahead.
#[derive(Debug)]
pub struct ResumeDetector {
    last: Option<(Instant, std::time::SystemTime)>,
    threshold: Duration,
}

impl ResumeDetector {
    /// `threshold`: how far the wall clock must run ahead of the monotonic one to count.
    pub fn new(threshold: Duration) -> Self {
        Self {
            last: None,
            threshold,
        }
    }

    /// Returns whether the machine slept since the previous call.
    pub fn check(&mut self, mono: Instant, wall: std::time::SystemTime) -> bool {
        let slept = match self.last {
            Some((m0, w0)) => {
                let mono_elapsed = mono.saturating_duration_since(m0);
                let wall_elapsed = wall.duration_since(w0).unwrap_or_default();
                wall_elapsed > mono_elapsed + self.threshold
            }
            None => false,
        };
        self.last = Some((mono, wall));
        slept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_MIN: Duration = Duration::from_secs(300);

    fn schedule(names: &[&str]) -> (Schedule, Instant) {
        let now = Instant::now();
        let mut s = Schedule::new();
        let accounts: Vec<(String, Duration)> =
            names.iter().map(|n| (n.to_string(), FIVE_MIN)).collect();
        s.set_accounts(&accounts, now);
        (s, now)
    }

    #[tokio::test(start_paused = true)]
    async fn new_accounts_are_due_at_once_and_never_polled_twice_at_once() {
        let (mut s, now) = schedule(&["a", "b", "c"]);
        let mut first = s.take_due(now, 2);
        first.sort();
        assert_eq!(first.len(), 2, "at most the limit");
        let rest = s.take_due(now, 10);
        assert_eq!(rest.len(), 1);
        assert!(
            s.take_due(now + FIVE_MIN * 10, 10).is_empty(),
            "running accounts are not taken again"
        );
        assert_eq!(s.next_due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_good_poll_the_next_is_an_interval_later_with_a_little_jitter() {
        let (mut s, now) = schedule(&["a"]);
        for _ in 0..50 {
            s.take_due(now, 1);
            s.finished("a", PollResult::Ok, now);
            let wait = s.due("a").unwrap() - now;
            assert!(wait >= FIVE_MIN && wait < FIVE_MIN + MAX_JITTER, "{wait:?}");
        }
        let mut s = Schedule::new();
        s.set_accounts(&[("fast".into(), Duration::from_secs(60))], now);
        s.take_due(now, 1);
        s.finished("fast", PollResult::Ok, now);
        let wait = s.due("fast").unwrap() - now;
        assert!(
            wait >= Duration::from_secs(60) && wait < Duration::from_secs(66),
            "a tenth at most: {wait:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn temporary_failures_back_off_exponentially_up_to_the_cap_and_reset_on_success() {
        let (mut s, now) = schedule(&["a"]);
        let mut waits = Vec::new();
        for _ in 0..10 {
            s.take_due(now, 1);
            s.finished("a", PollResult::Temporary { at_least: None }, now);
            waits.push((s.due("a").unwrap() - now).as_secs());
        }
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1800, 1800, 1800, 1800]);
        s.take_due(now, 1);
        s.finished("a", PollResult::Ok, now);
        s.take_due(now, 1);
        s.finished("a", PollResult::Temporary { at_least: None }, now);
        assert_eq!(
            (s.due("a").unwrap() - now).as_secs(),
            30,
            "a success resets the backoff"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_asking_for_a_delay_gets_it() {
        let (mut s, now) = schedule(&["a"]);
        s.take_due(now, 1);
        s.finished(
            "a",
            PollResult::Temporary {
                at_least: Some(Duration::from_secs(900)),
            },
            now,
        );
        assert_eq!((s.due("a").unwrap() - now).as_secs(), 900);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_login_pauses_the_account_until_the_user_asks() {
        let (mut s, now) = schedule(&["a", "b"]);
        s.take_due(now, 2);
        s.finished("a", PollResult::NeedsUser, now);
        s.finished("b", PollResult::Ok, now);
        assert!(s.is_paused("a"));
        assert_eq!(s.due("a").unwrap() - now, PAUSED_RETRY);
        // other accounts carry on
        assert_eq!(
            s.take_due(now + FIVE_MIN + MAX_JITTER, 5),
            vec!["b".to_owned()]
        );
        // a reload keeps it paused (the agent ends the pause of an account it changed)
        let later = now + Duration::from_secs(60);
        s.set_accounts(&[("a".into(), FIVE_MIN), ("b".into(), FIVE_MIN)], later);
        assert!(s.is_paused("a"));
        assert_eq!(s.due("a").unwrap() - now, PAUSED_RETRY);
        // and so does a sibling getting through
        s.retry_now("a", later);
        assert_eq!(s.due("a").unwrap() - now, PAUSED_RETRY);
        // asking for a poll ends the pause
        s.take_due(later, 1);
        s.finished("a", PollResult::NeedsUser, later);
        s.poll_now("a", later);
        assert_eq!(s.due("a"), Some(later));
    }

    #[tokio::test(start_paused = true)]
    async fn accounts_in_backoff_are_retried_at_once_when_asked_and_others_are_not() {
        let (mut s, now) = schedule(&["a", "b", "c"]);
        s.take_due(now, 3);
        s.finished("a", PollResult::Temporary { at_least: None }, now);
        s.finished("b", PollResult::Ok, now);
        let later = now + Duration::from_secs(5);
        s.retry_now("a", later);
        s.retry_now("b", later);
        assert_eq!(s.due("a"), Some(later), "in backoff: now");
        assert!(s.due("b").unwrap() >= now + FIVE_MIN, "healthy: left alone");
        s.retry_now("c", later);
        assert!(
            s.is_running("c") && s.due("c").is_none(),
            "running: left alone"
        );
        // A pause remembered from before a restart.
        s.pause("b", now + PAUSED_RETRY);
        assert!(s.is_paused("b"));
        assert_eq!(s.due("b"), Some(now + PAUSED_RETRY));
        s.poll_now("b", later);
        assert!(!s.is_paused("b"));
        assert_eq!(s.due("b"), Some(later));
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_asked_for_while_one_runs_follows_it_at_once() {
        let (mut s, now) = schedule(&["a"]);
        s.take_due(now, 1);
        s.poll_now("a", now);
        assert_eq!(s.due("a"), None, "still running");
        let later = now + Duration::from_secs(5);
        s.finished("a", PollResult::Ok, later);
        assert_eq!(s.due("a"), Some(later));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_resume_everything_not_paused_is_due() {
        let (mut s, now) = schedule(&["a", "b"]);
        s.take_due(now, 2);
        s.finished("a", PollResult::Ok, now);
        s.finished("b", PollResult::NeedsUser, now);
        let later = now + Duration::from_secs(10);
        s.resumed(later);
        assert_eq!(s.due("a"), Some(later));
        assert_eq!(s.due("b"), Some(now + PAUSED_RETRY));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_drops_removed_accounts_and_keeps_the_timing_of_the_rest() {
        let (mut s, now) = schedule(&["a", "b"]);
        s.take_due(now, 2);
        s.finished("a", PollResult::Ok, now);
        s.finished("b", PollResult::Ok, now);
        let due_a = s.due("a").unwrap();
        s.set_accounts(
            &[("a".into(), FIVE_MIN), ("c".into(), FIVE_MIN)],
            now + Duration::from_secs(1),
        );
        assert_eq!(s.due("a"), Some(due_a));
        assert_eq!(s.due("b"), None);
        assert_eq!(s.due("c"), Some(now + Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_wall_clock_running_ahead_means_the_machine_slept() {
        let mut d = ResumeDetector::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let w0 = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(!d.check(t0, w0));
        // 30 s later on both clocks: no sleep
        assert!(!d.check(t0 + Duration::from_secs(30), w0 + Duration::from_secs(30)));
        // 30 s of monotonic time, 2 h of wall time: the machine slept
        assert!(d.check(
            t0 + Duration::from_secs(60),
            w0 + Duration::from_secs(30 + 7200)
        ));
        // a clock set back is not a sleep
        assert!(!d.check(t0 + Duration::from_secs(90), w0));
    }
}
