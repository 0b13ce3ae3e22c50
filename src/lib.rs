//! popsync: downloads new mail from POP3 servers into local mailboxes exactly once.
pub mod pop3;
pub mod config;
pub mod store;
pub mod plan;
