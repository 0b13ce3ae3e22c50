//! The agent's alarm clock: one wake-up when the next thing is due, and one when the machine
//! wakes from sleep — nothing in between, so an agent at rest costs a laptop next to nothing.
//!
//! On Linux the alarm is a timer of the kernel's own (`timerfd`) on the clock that keeps
//! counting while the machine sleeps (`CLOCK_BOOTTIME`): a poll due during a sleep is due the
//! moment the machine wakes. A second timer, set far in the future on the wall clock with
//! `TFD_TIMER_CANCEL_ON_SET`, is cancelled by the kernel whenever the wall clock jumps, which
//! includes every resume from suspend: that wake-up is how the agent hears of a resume at
//! once, without looking at the clocks every minute. (tokio's own timers would serve, but
//! its timer wheel wakes up to three times for one long sleep, and they stop counting while
//! the machine sleeps.)
//!
//! Elsewhere (macOS, Windows) it is tokio's timer, plus a look at the clocks every
//! [`CLOCK_CHECK`] to notice a resume.

use tokio::time::Instant;

/// Why [`Alarm::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The time given to [`Alarm::set`] has come.
    Due,
    /// The clocks may have jumped (a resume, the wall clock set): time to compare them. On
    /// Windows this also comes every [`CLOCK_CHECK`], when the agent looks for `popsync poll`
    /// requests.
    Clock,
}

/// How often the clocks are compared where no event says the machine woke up (and, on
/// Windows, where no signal brings `popsync poll`, how often its requests are looked for).
#[cfg(not(target_os = "linux"))]
pub const CLOCK_CHECK: std::time::Duration = if cfg!(windows) {
    std::time::Duration::from_secs(30)
} else {
    std::time::Duration::from_secs(60)
};

pub use imp::Alarm;

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::os::fd::OwnedFd;
    use tokio::time::Instant;

    use rustix::time::{
        Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
        timerfd_settime,
    };
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;
    use tracing::{debug, warn};

    use super::Wake;

    /// Far enough in the future never to expire (the year 2242), near enough for the kernel
    /// to accept.
    const NEVER: i64 = 1 << 33;

    pub struct Alarm {
        /// `CLOCK_BOOTTIME`, set to the next due time (relative), or disarmed.
        due: AsyncFd<OwnedFd>,
        /// `CLOCK_REALTIME` with `TFD_TIMER_CANCEL_ON_SET`; `None` where the kernel would not
        /// have it (the agent then looks at the clocks at every due time only).
        clock: Option<AsyncFd<OwnedFd>>,
    }

    impl Alarm {
        pub fn new() -> io::Result<Self> {
            let flags = TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC;
            let due = timerfd_create(TimerfdClockId::Boottime, flags)?;
            let due = watch(due)?;
            let clock = match timerfd_create(TimerfdClockId::Realtime, flags)
                .map_err(io::Error::from)
                .and_then(|fd| {
                    watch_clock(&fd)?;
                    watch(fd)
                }) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    warn!(
                        "cannot watch the wall clock ({e}): a resume from sleep is noticed \
                         at the next poll, not at once"
                    );
                    None
                }
            };
            Ok(Self { due, clock })
        }

        /// Wake at `at` (at once if it has passed); `None`: not until the clock jumps.
        pub fn set(&mut self, at: Option<Instant>) {
            let value = match at {
                // A zero value would disarm the timer: the least that arms it is 1 ns.
                Some(t) => timespec(t.saturating_duration_since(Instant::now())).max(Timespec {
                    tv_sec: 0,
                    tv_nsec: 1,
                }),
                None => Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
            };
            let spec = Itimerspec {
                it_interval: Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: value,
            };
            if let Err(e) = timerfd_settime(self.due.get_ref(), TimerfdTimerFlags::empty(), &spec) {
                // Cannot happen with a valid timer and value; say so rather than stall.
                warn!("cannot set the agent's timer: {e}");
            }
        }

        /// Waits for the time set, or for the wall clock to jump. Cancel-safe.
        pub async fn wait(&mut self) -> Wake {
            let Self { due, clock } = self;
            tokio::select! {
                woke = expired(due) => match woke {
                    Ok(()) => Wake::Due,
                    Err(e) => failed(e).await,
                },
                woke = jumped(clock.as_ref()) => match woke {
                    Ok(()) => Wake::Clock,
                    Err(e) => failed(e).await,
                },
            }
        }
    }

    /// A timer that cannot be read: wait a little so that the agent goes on (its loop sets
    /// the timer again) instead of spinning.
    async fn failed(e: io::Error) -> Wake {
        warn!("the agent's timer failed: {e}");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        Wake::Due
    }

    /// Registers a timer with tokio's reactor. tokio deprecates this safe form because any
    /// `AsRawFd` type could hand it a different descriptor later; an `OwnedFd` cannot (it is
    /// the condition its `unsafe` replacement states), and popsync has no `unsafe` code.
    #[allow(deprecated)]
    fn watch(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
        AsyncFd::with_interest(fd, Interest::READABLE)
    }

    fn timespec(d: std::time::Duration) -> Timespec {
        Timespec {
            tv_sec: i64::try_from(d.as_secs()).unwrap_or(NEVER).min(NEVER),
            tv_nsec: d.subsec_nanos().into(),
        }
    }

    /// Arms the wall-clock timer that the kernel cancels when the clock jumps.
    fn watch_clock(fd: &OwnedFd) -> io::Result<()> {
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: NEVER,
                tv_nsec: 0,
            },
        };
        timerfd_settime(
            fd,
            TimerfdTimerFlags::ABSTIME | TimerfdTimerFlags::CANCEL_ON_SET,
            &spec,
        )?;
        Ok(())
    }

    /// Reads one expiry of a timer (8 bytes, the count); `Ok(false)` when there was none.
    fn read_timer(fd: &OwnedFd) -> io::Result<bool> {
        let mut count = [0u8; 8];
        match rustix::io::read(fd, &mut count) {
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::AGAIN) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn expired(fd: &AsyncFd<OwnedFd>) -> io::Result<()> {
        loop {
            let mut ready = fd.readable().await?;
            // Readiness left over from before the timer was set again reads nothing.
            if read_timer(fd.get_ref())? {
                return Ok(());
            }
            ready.clear_ready();
        }
    }

    async fn jumped(fd: Option<&AsyncFd<OwnedFd>>) -> io::Result<()> {
        let Some(fd) = fd else {
            return std::future::pending().await;
        };
        loop {
            let mut ready = fd.readable().await?;
            match read_timer(fd.get_ref()) {
                Ok(false) => ready.clear_ready(),
                // Cancelled (ECANCELED): the clock jumped. The timer stays cancelled until
                // it is armed again.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::CANCELED.raw_os_error()) => {
                    watch_clock(fd.get_ref())?;
                    debug!("the wall clock jumped");
                    return Ok(());
                }
                // Expired: not before 2242.
                Ok(true) => {
                    watch_clock(fd.get_ref())?;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use tokio::time::Instant;

    use super::{CLOCK_CHECK, Wake};

    pub struct Alarm {
        at: Option<Instant>,
        check: tokio::time::Interval,
    }

    impl Alarm {
        pub fn new() -> std::io::Result<Self> {
            let mut check = tokio::time::interval(CLOCK_CHECK);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            Ok(Self { at: None, check })
        }

        pub fn set(&mut self, at: Option<Instant>) {
            self.at = at;
        }

        pub async fn wait(&mut self) -> Wake {
            let at = self.at;
            tokio::select! {
                () = async {
                    match at {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => Wake::Due,
                _ = self.check.tick() => Wake::Clock,
            }
        }
    }
}

/// The earliest of the times given, if any.
pub fn earliest(times: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    times.into_iter().flatten().min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_of_some() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        assert_eq!(earliest([None, Some(later), Some(now)]), Some(now));
        assert_eq!(earliest([None, None]), None);
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn wakes_when_due_and_not_before() {
        runtime().block_on(async {
            let mut alarm = Alarm::new().unwrap();
            let start = Instant::now();
            alarm.set(Some(start + Duration::from_millis(150)));
            assert_eq!(alarm.wait().await, Wake::Due);
            assert!(start.elapsed() >= Duration::from_millis(150));
        });
    }

    #[test]
    fn a_time_past_wakes_at_once_and_a_new_time_replaces_the_old() {
        runtime().block_on(async {
            let mut alarm = Alarm::new().unwrap();
            alarm.set(Some(Instant::now() - Duration::from_secs(1)));
            let woke = tokio::time::timeout(Duration::from_secs(5), alarm.wait()).await;
            assert_eq!(woke.ok(), Some(Wake::Due));

            // Set far away, then nearer: the nearer one counts.
            alarm.set(Some(Instant::now() + Duration::from_secs(3600)));
            alarm.set(Some(Instant::now() + Duration::from_millis(50)));
            let woke = tokio::time::timeout(Duration::from_secs(5), alarm.wait()).await;
            assert_eq!(woke.ok(), Some(Wake::Due));
        });
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn unset_it_does_not_wake() {
        runtime().block_on(async {
            let mut alarm = Alarm::new().unwrap();
            alarm.set(Some(Instant::now() + Duration::from_millis(20)));
            // Expired, then set again before it was read: the old expiry is gone.
            std::thread::sleep(Duration::from_millis(40));
            alarm.set(None);
            let woke = tokio::time::timeout(Duration::from_millis(300), alarm.wait()).await;
            assert!(woke.is_err(), "woke although nothing was set: {woke:?}");
        });
    }
}
