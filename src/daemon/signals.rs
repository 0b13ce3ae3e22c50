//! What the agent is told from outside: stop (SIGTERM, SIGINT; Ctrl-C and the console
//! closing on Windows), reload the configuration (SIGHUP) and poll now (SIGUSR1).

// Reload and PollNow come from Unix signals; elsewhere only a stop exists.
#[cfg_attr(not(unix), allow(dead_code))]
pub(super) enum Signal {
    Stop(&'static str),
    Reload,
    PollNow,
}

#[cfg(unix)]
pub(super) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    pub(super) fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
        })
    }

    pub(super) async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.hup.recv() => Signal::Reload,
            _ = self.usr1.recv() => Signal::PollNow,
        }
    }
}

/// Ctrl-C, Ctrl-Break and the console window being closed. (Windows sends the logoff and
/// shutdown events only to services; an interactive program is simply ended then, which is
/// safe.) After a close event Windows ends the process a few seconds later whatever it does:
/// a fetch cut short there is as safe as a kill.
#[cfg(windows)]
pub(super) struct Signals {
    c: tokio::signal::windows::CtrlC,
    brk: tokio::signal::windows::CtrlBreak,
    close: tokio::signal::windows::CtrlClose,
}

#[cfg(windows)]
impl Signals {
    pub(super) fn new() -> std::io::Result<Self> {
        use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close};
        Ok(Self {
            c: ctrl_c()?,
            brk: ctrl_break()?,
            close: ctrl_close()?,
        })
    }

    pub(super) async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.c.recv() => Signal::Stop("Ctrl-C"),
            _ = self.brk.recv() => Signal::Stop("Ctrl-Break"),
            _ = self.close.recv() => Signal::Stop("the console window closing"),
        }
    }
}

#[cfg(not(any(unix, windows)))]
pub(super) struct Signals;

#[cfg(not(any(unix, windows)))]
impl Signals {
    pub(super) fn new() -> std::io::Result<Self> {
        Ok(Self)
    }

    pub(super) async fn next(&mut self) -> Signal {
        let _ = tokio::signal::ctrl_c().await;
        Signal::Stop("Ctrl-C")
    }
}
