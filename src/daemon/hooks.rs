//! The new-mail hook, run off the agent's scheduling path: a poll ends (and its account can
//! be polled again) as soon as its mail is stored; the hook runs beside, with its own time
//! limit (`hook-timeout`), at most [`RUNNING`] at once and [`QUEUE`] waiting — beyond that a
//! run is dropped and that is logged, so hooks that hang cannot pile up without end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tracing::{Instrument as _, error_span, warn};

use crate::config::{Account, Delivery};

/// Most hooks running at once.
pub const RUNNING: usize = 4;
/// Most hook runs waiting for one of those.
pub const QUEUE: usize = 16;

struct Job {
    argv: Vec<String>,
    account: String,
    new_messages: u64,
    delivery: Delivery,
    limit: Duration,
}

/// Hands hook runs to a task of their own.
pub struct Hooks {
    jobs: mpsc::Sender<Job>,
}

impl Hooks {
    /// Starts the runner on the current runtime.
    pub fn start() -> Self {
        let (jobs, mut queue) = mpsc::channel::<Job>(QUEUE);
        let slots = Arc::new(Semaphore::new(RUNNING));
        tokio::spawn(async move {
            while let Some(job) = queue.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let span = error_span!("account", name = job.account.as_str());
                tokio::spawn(
                    async move {
                        crate::hook::run_new_mail_hook(
                            &job.argv,
                            &job.account,
                            job.new_messages,
                            &job.delivery,
                            job.limit,
                        )
                        .await;
                        drop(slot);
                    }
                    .instrument(span),
                );
            }
        });
        Self { jobs }
    }

    /// Runs `account`'s new-mail hook (if it has one) for `new_messages`, without waiting.
    pub fn new_mail(&self, account: &Account, new_messages: u64) {
        let Some(argv) = &account.notifications.on_new_mail else {
            return;
        };
        if new_messages == 0 {
            return;
        }
        let job = Job {
            argv: argv.clone(),
            account: account.name.clone(),
            new_messages,
            delivery: account.delivery.clone(),
            limit: account.notifications.hook_timeout,
        };
        if self.jobs.try_send(job).is_err() {
            warn!(
                "{}: on-new-mail not run: {RUNNING} hooks are running and {QUEUE} waiting",
                account.name
            );
        }
    }
}
