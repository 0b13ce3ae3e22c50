//! A `popsync daemon` running in the background for one test: its log (standard error) goes
//! to a file the test reads as it grows; signals go to its process id; its exit is waited for
//! with a deadline. It is killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Home, PATIENCE, wait_for};

static NEXT_LOG: AtomicU64 = AtomicU64::new(0);

/// `popsync daemon` for `home`, talking to the session bus at `bus_address` and to no other
/// (the machine's own bus and systemd are kept out of reach).
pub fn command(home: &Home, bus_address: &str) -> Command {
    let mut cmd = home.command(&["daemon"]);
    cmd.env("DBUS_SESSION_BUS_ADDRESS", bus_address)
        .env("XDG_RUNTIME_DIR", home.path())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("JOURNAL_STREAM")
        .env_remove("POPSYNC_FAILPOINT");
    cmd
}

/// A bus address where no bus listens.
pub fn no_bus(home: &Home) -> String {
    format!("unix:path={}", home.path().join("no-bus-here").display())
}

pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `popsync daemon` for `home` on the bus at `bus_address`.
    pub fn start(home: &Home, bus_address: &str) -> Self {
        Self::spawn(home, command(home, bus_address))
    }

    /// Starts `cmd` (from [`command`], perhaps with more environment) with its standard
    /// error going to a log file in `home`.
    pub fn spawn(home: &Home, mut cmd: Command) -> Self {
        let n = NEXT_LOG.fetch_add(1, Ordering::SeqCst);
        let log = home.path().join(format!("daemon-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many log lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until `n` log lines contain `needle`; panics with the log if they do not come.
    pub fn wait_log_count(&self, needle: &str, n: usize) {
        if wait_for(PATIENCE, || (self.count(needle) >= n).then_some(())).is_none() {
            panic!(
                "the daemon did not log {needle:?} {n} time(s) within {PATIENCE:?}\n--- log\n{}",
                self.log()
            );
        }
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str) {
        self.wait_log_count(needle, 1);
    }

    /// Sends a signal (`"HUP"`, `"USR1"`, `"TERM"` ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Panics (with the log) unless it is still running.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "the daemon ended ({status}) but should still run\n--- log\n{}",
                self.log()
            );
        }
    }

    /// Waits for it to exit, at most `limit`; panics (with the log) if it does not.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        match wait_for(limit, || self.child.try_wait().unwrap()) {
            Some(status) => status,
            None => panic!(
                "the daemon did not exit within {limit:?}\n--- log\n{}",
                self.log()
            ),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` to its end like `Command::output`, but kills it (and panics) if it takes
/// longer than `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
    }
}
