//! Running the programs a user names — password and OAuth2 token commands, the MDA, the
//! new-mail hook, the notification's open command — all one way:
//!
//! - as program and arguments, never through a shell;
//! - in a process group of its own (on Unix), so that when its time is up the whole group
//!   is killed, whatever it started too — unless it may need the terminal (a password
//!   command run from a terminal may prompt on it; a background group would be stopped);
//! - with its output collected on threads of its own, up to [`CAPTURE_LIMIT`] per stream
//!   and the rest drained, so a chatty program never blocks on a full pipe;
//! - and never held up by what it leaves behind: once the program itself has ended, a
//!   child of it that keeps a pipe open gets [`STRAGGLER_GRACE`], no more.

use std::ffi::OsString;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Most bytes kept of each output stream.
pub const CAPTURE_LIMIT: u64 = 64 * 1024;
/// How long output is waited for once the program has ended.
pub const STRAGGLER_GRACE: Duration = Duration::from_secs(1);

/// What a program gets on its standard input.
#[derive(Debug)]
pub enum Input {
    Null,
    /// This file, open for reading (an MDA's message).
    File(std::fs::File),
}

/// A program to run.
#[derive(Debug)]
pub struct Spec {
    /// Program and arguments; `argv[0]` is found in `PATH` unless it has a slash.
    pub argv: Vec<String>,
    /// Added to its environment.
    pub env: Vec<(&'static str, OsString)>,
    pub stdin: Input,
    /// Collect its standard output (else it goes nowhere).
    pub capture_stdout: bool,
    /// Collect its standard error (else it goes nowhere).
    pub capture_stderr: bool,
    /// How long it may run; `None` for as long as it likes.
    pub limit: Option<Duration>,
    /// Run it in a process group of its own, killed whole at the limit (see the module
    /// docs); otherwise only the program itself is killed.
    pub own_group: bool,
}

impl Spec {
    /// `argv` with nothing on its standard input, both outputs collected, and `limit`.
    pub fn new(argv: &[String], limit: Option<Duration>) -> Self {
        Self {
            argv: argv.to_vec(),
            env: Vec::new(),
            stdin: Input::Null,
            capture_stdout: true,
            capture_stderr: true,
            limit,
            own_group: true,
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub enum Ended {
    /// It exited (or was killed by a signal) on its own.
    Exited {
        status: ExitStatus,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
    /// Its time was up: it and its process group were killed.
    TimedOut { stdout: Vec<u8>, stderr: Vec<u8> },
    /// It could not be started (or waited for).
    NotStarted(std::io::Error),
}

/// A started program.
#[derive(Debug)]
pub struct Running {
    child: std::process::Child,
    stdout: Option<Collected>,
    stderr: Option<Collected>,
    deadline: Option<Instant>,
    own_group: bool,
}

/// Starts a program.
pub fn spawn(spec: Spec) -> std::io::Result<Running> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("no program named"))?;
    let mut command = Command::new(program);
    command.args(args).envs(spec.env);
    // Its own process group, so a timeout ends whatever it started too (a shell's children
    // would otherwise live on, holding the pipes).
    #[cfg(unix)]
    if spec.own_group {
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
    }
    command.stdin(match spec.stdin {
        Input::Null => Stdio::null(),
        Input::File(file) => Stdio::from(file),
    });
    let piped = |yes: bool| if yes { Stdio::piped() } else { Stdio::null() };
    command
        .stdout(piped(spec.capture_stdout))
        .stderr(piped(spec.capture_stderr));
    let started = Instant::now();
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().map(collect);
    let stderr = child.stderr.take().map(collect);
    Ok(Running {
        child,
        stdout,
        stderr,
        deadline: spec.limit.map(|l| started + l),
        own_group: spec.own_group,
    })
}

/// A stream being read on a thread of its own.
#[derive(Debug)]
struct Collected {
    kept: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

/// Reads a stream on a thread of its own: the first [`CAPTURE_LIMIT`] bytes are kept, the
/// rest is drained.
fn collect(mut stream: impl Read + Send + 'static) -> Collected {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let (tx, done) = mpsc::channel();
    let shared = Arc::clone(&kept);
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let mut kept = shared.lock().unwrap_or_else(|e| e.into_inner());
                    let room = (CAPTURE_LIMIT as usize).saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    Collected { kept, done }
}

impl Collected {
    /// What the stream said: all of it once it ends, or what came within
    /// [`STRAGGLER_GRACE`].
    fn take(self) -> Vec<u8> {
        let _ = self.done.recv_timeout(STRAGGLER_GRACE);
        std::mem::take(&mut *self.kept.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Running {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the program to end, or for its time to be up.
    pub fn wait(mut self) -> Ended {
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if self.deadline.is_some_and(|d| Instant::now() >= d) => {
                    self.kill();
                    break None;
                }
                Ok(None) => {
                    let left = self
                        .deadline
                        .map_or(pause, |d| d.saturating_duration_since(Instant::now()));
                    std::thread::sleep(pause.min(left).max(Duration::from_millis(1)));
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => {
                    self.kill();
                    return Ended::NotStarted(e);
                }
            }
        };
        // A program that left something running in the background with our pipes must not
        // hold popsync up: what it said by now is enough.
        let take = |c: Option<Collected>| c.map(Collected::take).unwrap_or_default();
        let (stdout, stderr) = (take(self.stdout), take(self.stderr));
        match status {
            Some(status) => Ended::Exited {
                status,
                stdout,
                stderr,
            },
            None => Ended::TimedOut { stdout, stderr },
        }
    }

    /// Kills the program and everything in its process group, and reaps it.
    fn kill(&mut self) {
        #[cfg(unix)]
        if self.own_group
            && let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        // Elsewhere there is no process group to kill: the program itself is.
        #[cfg(not(unix))]
        let _ = self.own_group;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a program to its end (or its time limit), on this thread.
pub fn run(spec: Spec) -> Ended {
    match spawn(spec) {
        Ok(running) => running.wait(),
        Err(e) => Ended::NotStarted(e),
    }
}

/// Runs a program to its end (or its time limit) without blocking the async runtime.
pub async fn run_async(spec: Spec) -> Ended {
    tokio::task::spawn_blocking(move || run(spec))
        .await
        .unwrap_or_else(|e| Ended::NotStarted(std::io::Error::other(e)))
}

/// Output as one line of text for a message: lossy UTF-8, trimmed.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn sh(script: &str, limit: Duration) -> Ended {
        run(Spec::new(
            &["sh".to_owned(), "-c".to_owned(), script.to_owned()],
            Some(limit),
        ))
    }

    #[test]
    fn output_and_status_are_collected() {
        match sh("echo out; echo err >&2; exit 3", Duration::from_secs(10)) {
            Ended::Exited {
                status,
                stdout,
                stderr,
            } => {
                assert_eq!(status.code(), Some(3));
                assert_eq!(stdout, b"out\n");
                assert_eq!(stderr, b"err\n");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_hanging_program_and_its_whole_group_are_killed_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild");
        let t = Instant::now();
        let script = format!("sleep 30 & echo $! > '{}'; wait", pid_file.display());
        let ended = sh(&script, Duration::from_millis(300));
        assert!(matches!(ended, Ended::TimedOut { .. }), "{ended:?}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild went with the group (give the kernel a moment to reap it).
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.is_empty()
                || stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
        });
        assert!(gone, "process {pid} outlived the timeout");
    }

    #[test]
    fn a_background_child_holding_the_pipes_does_not_hold_up_the_caller() {
        let t = Instant::now();
        let ended = sh("echo said; sleep 30 & exit 0", Duration::from_secs(20));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        match ended {
            Ended::Exited { status, stdout, .. } => {
                assert!(status.success());
                assert_eq!(stdout, b"said\n");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn output_beyond_the_limit_is_drained_not_kept() {
        let ended = sh(
            "head -c 1000000 /dev/zero; echo done >&2",
            Duration::from_secs(20),
        );
        match ended {
            Ended::Exited { stdout, stderr, .. } => {
                assert_eq!(stdout.len() as u64, CAPTURE_LIMIT);
                assert_eq!(stderr, b"done\n");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_program_is_not_started() {
        let ended = run(Spec::new(&["/nonexistent/program".to_owned()], None));
        assert!(matches!(ended, Ended::NotStarted(_)), "{ended:?}");
    }
}
