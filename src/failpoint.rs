//! Named points in the delivery protocol where a test can freeze popsync, to kill it at
//! exactly that instant (the crash tests do this for every step, in addition to killing it
//! at random instants).
//!
//! Set `POPSYNC_FAILPOINT=NAME` (or `NAME:N` for the N-th time the point is reached): when
//! popsync gets there it prints `popsync: failpoint NAME reached` to stderr and stops making
//! progress, waiting to be killed. Without the variable a failpoint costs one atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms a failpoint.
pub const ENV: &str = "POPSYNC_FAILPOINT";

struct Armed {
    name: String,
    nth: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var(ENV).ok().filter(|s| !s.is_empty())?;
            let (name, nth) = match spec.rsplit_once(':') {
                Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(1)),
                None => (spec, 1),
            };
            Some(Armed {
                name,
                nth,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Marks a failpoint. Freezes the process here if a test armed this point.
pub fn hit(name: &str) {
    let Some(armed) = armed() else { return };
    if armed.name != name || armed.hits.fetch_add(1, Ordering::SeqCst) + 1 != armed.nth {
        return;
    }
    eprintln!("popsync: failpoint {name} reached");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
