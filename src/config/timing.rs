//! The keys that say how long popsync waits, and how often it polls.

use std::time::Duration;

use super::{DEFAULT_FORGET_AFTER, DEFAULT_INTERVAL, DEFAULT_TIMEOUT};
use crate::keys::{Checker, Layered, keys};

keys! {
    /// Time limits and the schedule.
    pub struct TimingKeys {
        /// The limit for connecting, the TLS handshake and each of the server's answers.
        timeout: "timeout" { default: "\"1m\"", example: "\"30s\"" },
        /// How long a message may be missing from the server's listing before popsync
        /// forgets it (a server that briefly lists nothing causes no re-download).
        forget_after: "forget-after" { default: "\"7d\"", example: "\"30d\"" },
        /// How often the agent polls the account.
        interval: "interval" { default: "\"5m\"", example: "\"10m\"" },
    }
}

/// How long popsync waits, and how often.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Limit for connecting, the TLS handshake and waiting for each response.
    pub timeout: Duration,
    /// How long a message may be missing from the server's listing before popsync forgets
    /// it (so that a server that briefly lists nothing does not cause a re-download).
    pub forget_after: Duration,
    /// How often the agent polls this account.
    pub interval: Duration,
}

pub fn read(c: &mut Checker<'_>, layers: &Layered<'_>) -> Timing {
    let keys = TimingKeys::take(layers);
    Timing {
        timeout: keys
            .timeout
            .duration(c, DEFAULT_TIMEOUT, Duration::from_millis(100)),
        forget_after: keys
            .forget_after
            .duration(c, DEFAULT_FORGET_AFTER, Duration::ZERO),
        interval: keys
            .interval
            .duration(c, DEFAULT_INTERVAL, Duration::from_secs(10)),
    }
}
