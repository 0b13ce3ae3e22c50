//! What the agent tells the user about trouble, and when: the way people think of it.
//!
//! - A server that cannot be reached (or is busy) is one outage for every account on it
//!   (same host and port). It is told once it has lasted `notify-failure-after`, in one
//!   notification naming the accounts; when any of them gets through, the outage is over:
//!   "working again" takes the failure's place on screen, and the other accounts waiting in
//!   backoff are tried at once.
//! - Trouble of one account alone that passes by itself (its mailbox locked by another
//!   popsync, a full disk) is the same, for that account alone.
//! - What needs the user — a refused login, no password, a certificate that is not trusted,
//!   a configuration the server cannot work with — is told at once, once per problem,
//!   saying what to do, with a "Retry now" action; its end is told too.
//!
//! This is bookkeeping only: it decides which notes to send; the agent sends them.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use crate::notify::{Action, Note};

/// One failed poll, as the user is to hear of it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What kind of problem, e.g. "popsync: login refused".
    pub title: &'static str,
    /// It needs the user: told at once, not after `notify-failure-after`.
    pub urgent: bool,
    /// What went wrong, in words for people.
    pub detail: String,
    /// What the user can do about it, if anything.
    pub advice: Option<String>,
    /// The server could not be reached or was busy: shared with other accounts on it.
    pub server_side: bool,
}

/// How a poll ended.
#[derive(Debug, Clone)]
pub enum Event {
    Ok,
    /// Cut short by the agent's own stop: says nothing about health.
    Stopped,
    Failed(Failure),
}

/// The account a poll was for.
#[derive(Debug, Clone)]
pub struct Member<'a> {
    pub name: &'a str,
    /// "host:port".
    pub server: String,
    /// The account's notifications are on.
    pub notify: bool,
}

/// What to do after a poll.
#[derive(Debug, Default)]
pub struct Verdict {
    pub notes: Vec<Note>,
    /// Accounts to try at once: the others in an outage that just ended.
    pub retry: Vec<String>,
}

#[derive(Debug)]
struct Outage {
    since: SystemTime,
    /// The accounts failing, with whether their notifications are on.
    failing: BTreeMap<String, bool>,
    /// The last failure, in words for people.
    detail: String,
    told: bool,
}

/// The health of every account.
#[derive(Debug, Default)]
pub struct Health {
    /// By tag: `server:HOST:PORT` or `account:NAME`.
    outages: HashMap<String, Outage>,
    /// Accounts whose user was told of a problem needing them.
    told: HashMap<String, Told>,
}

#[derive(Debug, Clone, Copy)]
struct Told {
    title: &'static str,
    /// Something changed since (the configuration, a poll asked for in person): the same
    /// problem is told again.
    again: bool,
}

fn server_tag(server: &str) -> String {
    format!("server:{server}")
}

fn account_tag(name: &str) -> String {
    format!("account:{name}")
}

impl Health {
    /// The user already knows of `title` for `account` (told before a restart).
    pub fn already_told(&mut self, account: &str, title: &'static str) {
        self.told.insert(
            account.to_owned(),
            Told {
                title,
                again: false,
            },
        );
    }

    /// `account`'s configuration changed or the user asked for a poll in person: the same
    /// problem is told again if it persists (and its end, as before, when it ends).
    pub fn forget(&mut self, account: &str) {
        if let Some(told) = self.told.get_mut(account) {
            told.again = true;
        }
    }

    /// Forgets accounts no longer configured.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.told.retain(|name, _| keep(name));
        for outage in self.outages.values_mut() {
            outage.failing.retain(|name, _| keep(name));
        }
        self.outages.retain(|_, o| !o.failing.is_empty());
    }

    /// How many accounts are failing.
    pub fn failing(&self) -> usize {
        let mut names: Vec<&String> = self.told.keys().collect();
        for o in self.outages.values() {
            names.extend(o.failing.keys());
        }
        names.sort();
        names.dedup();
        names.len()
    }

    /// A poll of `who` ended with `event` at `now`. `siblings_running`: another account on
    /// the same server is being polled right now (its outcome is waited for before an
    /// outage is told, so that it is told once, naming them all).
    pub fn finished(
        &mut self,
        who: &Member<'_>,
        event: &Event,
        now: SystemTime,
        threshold: Duration,
        siblings_running: bool,
    ) -> Verdict {
        let mut verdict = Verdict::default();
        match event {
            Event::Stopped => {}
            Event::Ok => {
                let mut clear = None;
                if self.told.remove(who.name).is_some() {
                    clear = Some(Note::all_clear(
                        format!("popsync: working again — {}", who.name),
                        "Mail is being fetched again.",
                    ));
                }
                let own = account_tag(who.name);
                if self.outages.remove(&own).is_some_and(|o| o.told) {
                    clear = Some(Note::all_clear(
                        format!("popsync: working again — {}", who.name),
                        "Mail is being fetched again.",
                    ));
                }
                if let Some(note) = clear.filter(|_| who.notify) {
                    verdict.notes.push(note.tagged(own));
                }
                let tag = server_tag(&who.server);
                if let Some(outage) = self.outages.remove(&tag) {
                    verdict.retry = outage
                        .failing
                        .keys()
                        .filter(|n| *n != who.name)
                        .cloned()
                        .collect();
                    let named = told_names(&outage.failing);
                    if outage.told && !named.is_empty() {
                        verdict.notes.push(
                            Note::all_clear(
                                format!("popsync: working again — {}", who.server),
                                &format!("Mail is being fetched again for {}.", named.join(", ")),
                            )
                            .tagged(tag),
                        );
                    }
                }
            }
            Event::Failed(f) if f.urgent => {
                for outage in self.outages.values_mut() {
                    outage.failing.remove(who.name);
                }
                self.outages.retain(|_, o| !o.failing.is_empty());
                let known = self
                    .told
                    .get(who.name)
                    .is_some_and(|t| t.title == f.title && !t.again);
                if !known {
                    self.told.insert(
                        who.name.to_owned(),
                        Told {
                            title: f.title,
                            again: false,
                        },
                    );
                    if who.notify {
                        let mut detail = f.detail.clone();
                        if let Some(advice) = &f.advice {
                            detail.push_str("\n\n");
                            detail.push_str(advice);
                        }
                        verdict.notes.push(
                            Note::problem(format!("{} — {}", f.title, who.name), &detail)
                                .tagged(account_tag(who.name))
                                .with_action(Action::Retry(vec![who.name.to_owned()])),
                        );
                    }
                }
            }
            Event::Failed(f) => {
                let (tag, shared) = if f.server_side {
                    (server_tag(&who.server), true)
                } else {
                    (account_tag(who.name), false)
                };
                let outage = self.outages.entry(tag.clone()).or_insert_with(|| Outage {
                    since: now,
                    failing: BTreeMap::new(),
                    detail: String::new(),
                    told: false,
                });
                outage.failing.insert(who.name.to_owned(), who.notify);
                outage.detail = f.detail.clone();
                let lasted = now.duration_since(outage.since).unwrap_or_default() >= threshold;
                if outage.told || !lasted || (shared && siblings_running) {
                    return verdict;
                }
                outage.told = true;
                let named = told_names(&outage.failing);
                if named.is_empty() {
                    return verdict;
                }
                let accounts: Vec<String> = outage.failing.keys().cloned().collect();
                let note = if shared {
                    Note::problem(
                        format!("{} — {}", f.title, who.server),
                        &format!(
                            "{}\n\n{} {}. popsync keeps trying and tells you when it works again.",
                            outage.detail,
                            if named.len() == 1 {
                                "Account:"
                            } else {
                                "Accounts:"
                            },
                            named.join(", ")
                        ),
                    )
                } else {
                    Note::problem(format!("{} — {}", f.title, who.name), &outage.detail)
                };
                verdict
                    .notes
                    .push(note.tagged(tag).with_action(Action::Retry(accounts)));
            }
        }
        verdict
    }
}

/// The accounts (of `failing`) whose notifications are on.
fn told_names(failing: &BTreeMap<String, bool>) -> Vec<&str> {
    failing
        .iter()
        .filter(|(_, notify)| **notify)
        .map(|(n, _)| n.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn member(name: &str) -> Member<'_> {
        Member {
            name,
            server: "pop.example.net:995".into(),
            notify: true,
        }
    }

    fn down() -> Event {
        Event::Failed(Failure {
            title: "popsync: cannot fetch mail",
            urgent: false,
            detail: "connection refused by pop.example.net:995".into(),
            advice: None,
            server_side: true,
        })
    }

    fn refused() -> Event {
        Event::Failed(Failure {
            title: "popsync: login refused",
            urgent: true,
            detail: "login refused (USER/PASS): -ERR [AUTH] Authentication failed.".into(),
            advice: Some("Store the new password: popsync password set --account a".into()),
            server_side: false,
        })
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    #[test]
    fn an_outage_of_a_server_is_told_once_naming_its_accounts_and_its_end_replaces_it() {
        let mut h = Health::default();
        let (a, b, c) = (member("a"), member("b"), member("c"));
        // Short outages are not told.
        for m in [&a, &b, &c] {
            assert!(h.finished(m, &down(), at(0), MIN, false).notes.is_empty());
        }
        // Past the threshold: told when the last sibling running has come back failing.
        assert!(h.finished(&a, &down(), at(61), MIN, true).notes.is_empty());
        assert!(h.finished(&b, &down(), at(62), MIN, true).notes.is_empty());
        let v = h.finished(&c, &down(), at(62), MIN, false);
        assert_eq!(v.notes.len(), 1);
        let note = &v.notes[0];
        assert_eq!(
            note.summary,
            "popsync: cannot fetch mail — pop.example.net:995"
        );
        assert_eq!(
            note.body,
            "connection refused by pop.example.net:995\n\nAccounts: a, b, c. popsync keeps trying and tells you when it works again."
        );
        assert_eq!(note.icon, "dialog-warning");
        assert_eq!(note.tag.as_deref(), Some("server:pop.example.net:995"));
        assert_eq!(
            note.action,
            Some(Action::Retry(vec!["a".into(), "b".into(), "c".into()]))
        );
        assert_eq!(h.failing(), 3);
        // Not again.
        for m in [&a, &b, &c] {
            assert!(h.finished(m, &down(), at(200), MIN, false).notes.is_empty());
        }
        // One gets through: the others are tried at once, and the end replaces the problem.
        let v = h.finished(&b, &Event::Ok, at(300), MIN, false);
        assert_eq!(v.retry, ["a", "c"]);
        assert_eq!(v.notes.len(), 1);
        let note = &v.notes[0];
        assert_eq!(note.summary, "popsync: working again — pop.example.net:995");
        assert_eq!(note.body, "Mail is being fetched again for a, b, c.");
        assert_eq!(note.tag.as_deref(), Some("server:pop.example.net:995"));
        assert_ne!(note.icon, "dialog-warning");
        assert_eq!(h.failing(), 0);
        // The siblings' good polls say nothing more.
        assert!(
            h.finished(&a, &Event::Ok, at(301), MIN, false)
                .notes
                .is_empty()
        );
    }

    #[test]
    fn an_outage_shorter_than_the_threshold_ends_in_silence_but_still_retries_the_siblings() {
        let mut h = Health::default();
        h.finished(&member("a"), &down(), at(0), MIN, false);
        h.finished(&member("b"), &down(), at(1), MIN, false);
        let v = h.finished(&member("a"), &Event::Ok, at(30), MIN, false);
        assert!(v.notes.is_empty());
        assert_eq!(v.retry, ["b"]);
    }

    #[test]
    fn accounts_on_other_servers_and_without_notifications_are_not_named() {
        let mut h = Health::default();
        let quiet = Member {
            notify: false,
            ..member("quiet")
        };
        let other = Member {
            server: "pop.other.example:995".into(),
            ..member("other")
        };
        h.finished(&quiet, &down(), at(0), MIN, false);
        h.finished(&other, &down(), at(0), MIN, false);
        let v = h.finished(&member("a"), &down(), at(61), MIN, false);
        assert_eq!(
            v.notes[0].body,
            "connection refused by pop.example.net:995\n\nAccount: a. popsync keeps trying and tells you when it works again."
        );
        // An outage of accounts with notifications off is not told.
        let mut h = Health::default();
        h.finished(&quiet, &down(), at(0), MIN, false);
        assert!(
            h.finished(&quiet, &down(), at(61), MIN, false)
                .notes
                .is_empty()
        );
    }

    #[test]
    fn a_refused_login_is_told_at_once_with_advice_once_and_its_end_too() {
        let mut h = Health::default();
        let a = member("a");
        let v = h.finished(&a, &refused(), at(0), MIN, false);
        assert_eq!(v.notes.len(), 1);
        assert_eq!(v.notes[0].summary, "popsync: login refused — a");
        assert!(
            v.notes[0]
                .body
                .ends_with("\n\nStore the new password: popsync password set --account a"),
            "{:?}",
            v.notes[0].body
        );
        assert_eq!(v.notes[0].action, Some(Action::Retry(vec!["a".into()])));
        assert!(
            h.finished(&a, &refused(), at(10), MIN, false)
                .notes
                .is_empty()
        );
        let v = h.finished(&a, &Event::Ok, at(20), MIN, false);
        assert_eq!(v.notes[0].summary, "popsync: working again — a");
        assert_eq!(v.notes[0].tag.as_deref(), Some("account:a"));
        // Told before a restart: not told again.
        let mut h = Health::default();
        h.already_told("a", "popsync: login refused");
        assert!(
            h.finished(&a, &refused(), at(0), MIN, false)
                .notes
                .is_empty()
        );
        assert_eq!(h.failing(), 1);
    }

    #[test]
    fn a_stop_says_nothing_and_trouble_of_one_account_is_its_own() {
        let mut h = Health::default();
        let a = member("a");
        assert!(
            h.finished(&a, &Event::Stopped, at(0), MIN, false)
                .notes
                .is_empty()
        );
        let local = Event::Failed(Failure {
            title: "popsync: cannot fetch mail",
            urgent: false,
            detail: "the mailbox is locked".into(),
            advice: None,
            server_side: false,
        });
        h.finished(&a, &local, at(0), MIN, false);
        // A sibling on the same server running does not hold it back: it is not shared.
        let v = h.finished(&a, &local, at(61), MIN, true);
        assert_eq!(v.notes[0].summary, "popsync: cannot fetch mail — a");
        assert_eq!(v.notes[0].tag.as_deref(), Some("account:a"));
        let v = h.finished(&a, &Event::Ok, at(62), MIN, false);
        assert_eq!(v.notes[0].tag.as_deref(), Some("account:a"));
        assert!(v.retry.is_empty());
    }
}
