//! popsync: downloads new mail from POP3 servers into local mailboxes exactly once.
pub mod child;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod exit;
pub mod failpoint;
pub mod identity;
pub mod imap;
pub mod keys;
pub mod lock;
pub mod oauth2;
pub mod plan;
pub mod poll;
pub mod pop3;
pub mod store;

/// An error and its sources as one line: "outer: inner: innermost".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}
pub mod cli;
pub mod daemon;
pub mod hook;
pub mod notify;
pub mod scheduler;
pub mod service;
pub mod summary;
