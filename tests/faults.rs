//! popsync against a scripted POP3 server that drops, stalls, lies and misbehaves on cue.
//!
//! Each test runs the real `popsync fetch` on a private directory against a
//! [`script::ScriptServer`], which asserts every line popsync sends, and then checks what a
//! user would notice: the exit status, the message printed, the files in the Maildir and the
//! state database.
//!
//! A session that listed a portion's worth of new mail (`PORTION_MIN` messages) and nothing
//! popsync knew before is followed by another in the same run (some providers hand out mail
//! in portions); a script for a smaller first download is one session.

mod script;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use popsync::plan::PORTION_MIN;
use popsync::store::MessageState::{self, DeletePending, Deleted, Delivered};
use popsync::store::Store;
use script::{
    ScriptServer, Step, close, expect, expect_alone, listing, lockstep, message, partial, quiet,
    raw, refuse_tls, send, stall,
};

const ACCOUNT: &str = "test";
const USER: &str = "me";
const PASSWORD: &str = "s3cret-Pa55word";
const GREETING: &str = "+OK scripted POP3 server ready";
/// Capabilities without PIPELINING: popsync sends one command at a time.
const CAPS: &[&str] = &["TOP", "UIDL", "USER", "RESP-CODES"];
/// Capabilities with PIPELINING: popsync pipelines UIDL/LIST, RETR and DELE.
const CAPS_PIPELINING: &[&str] = &["TOP", "UIDL", "USER", "RESP-CODES", "PIPELINING"];
/// How long popsync may take at most before a test gives up on it.
const POPSYNC_DEADLINE: Duration = Duration::from_secs(60);
/// Longer than any client timeout used here; a stall ends early when popsync hangs up.
const LONG_STALL: Duration = Duration::from_secs(30);

// ----------------------------------------------------------------------------------------
// Messages and mailboxes

/// A message as a server sends it (CRLF line endings), with lines that need dot-stuffing.
fn mail(n: usize) -> Vec<u8> {
    format!(
        "From: Sender {n} <sender{n}@example.net>\r\n\
         To: me@example.net\r\n\
         Subject: message {n}\r\n\
         Message-ID: <{n}.faults@example.net>\r\n\
         \r\n\
         This is message {n}.\r\n\
         .A line that starts with a dot.\r\n\
         ..And one with two.\r\n"
    )
    .into_bytes()
}

/// A message as it must be stored in the Maildir: LF line endings, otherwise unchanged.
fn stored(message: &[u8]) -> Vec<u8> {
    String::from_utf8(message.to_vec())
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes()
}

/// The messages a server offers: message number `i + 1` has unique-id `uids[i]` and the
/// body `mail(i + 1)`.
struct Mailbox {
    uids: Vec<String>,
}

impl Mailbox {
    fn new<S: AsRef<str>>(uids: &[S]) -> Self {
        Self {
            uids: uids.iter().map(|u| u.as_ref().to_owned()).collect(),
        }
    }

    fn empty() -> Self {
        Self { uids: Vec::new() }
    }

    fn uidl(&self) -> Step {
        let lines: Vec<String> = (1..)
            .zip(&self.uids)
            .map(|(n, uid)| format!("{n} {uid}"))
            .collect();
        listing(&lines)
    }

    fn list(&self) -> Step {
        let lines: Vec<String> = (1..=self.uids.len())
            .map(|n| format!("{n} {}", mail(n).len()))
            .collect();
        listing(&lines)
    }

    /// UIDL, then LIST for the sizes of what is to be downloaded: for a session that
    /// downloads something.
    fn listings(&self) -> Vec<Step> {
        vec![expect("UIDL"), self.uidl(), expect("LIST"), self.list()]
    }

    /// UIDL alone: for a session with nothing to download (no LIST is needed then).
    fn uidl_only(&self) -> Vec<Step> {
        vec![expect("UIDL"), self.uidl()]
    }
}

/// RETR n answered with the whole message n.
fn retr(n: usize) -> Vec<Step> {
    vec![expect(format!("RETR {n}")), message(&mail(n))]
}

/// DELE n answered +OK.
fn dele(n: usize) -> Vec<Step> {
    vec![
        expect(format!("DELE {n}")),
        send(&format!("+OK message {n} deleted")),
    ]
}

/// The greeting and the first CAPA.
fn greet(greeting: &str, caps: &[&str]) -> Vec<Step> {
    vec![send(greeting), expect("CAPA"), listing(caps)]
}

/// Greeting, CAPA, USER/PASS and the CAPA popsync asks again after logging in.
fn login(caps: &[&str]) -> Vec<Step> {
    [
        greet(GREETING, caps),
        vec![
            expect(format!("USER {USER}")),
            send("+OK"),
            expect(format!("PASS {PASSWORD}")),
            send("+OK logged in"),
            expect("CAPA"),
            listing(caps),
        ],
    ]
    .concat()
}

fn quit() -> Vec<Step> {
    vec![expect("QUIT"), send("+OK bye")]
}

/// A whole session that lists `mailbox` and, finding nothing new, quits.
fn nothing_new(caps: &[&str], mailbox: &Mailbox) -> Vec<Step> {
    [login(caps), mailbox.uidl_only(), quit()].concat()
}

// ----------------------------------------------------------------------------------------
// Running popsync

/// The account's settings in the config file.
#[derive(Debug, Clone)]
struct Setup {
    security: &'static str,
    auth: &'static str,
    username: String,
    password: String,
    retention: &'static str,
    timeout: &'static str,
    forget_after: &'static str,
    /// An OAuth2 access token (printed by oauth2-token-command) instead of the password.
    token: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            security: "dangerous-plaintext",
            auth: "auto",
            username: USER.into(),
            password: PASSWORD.into(),
            retention: "keep",
            timeout: "5s",
            forget_after: "7d",
            token: None,
        }
    }
}

impl Setup {
    fn retention(mut self, retention: &'static str) -> Self {
        self.retention = retention;
        self
    }

    fn timeout(mut self, timeout: &'static str) -> Self {
        self.timeout = timeout;
        self
    }

    fn forget_after(mut self, forget_after: &'static str) -> Self {
        self.forget_after = forget_after;
        self
    }

    fn security(mut self, security: &'static str) -> Self {
        self.security = security;
        self
    }

    fn token(mut self, token: &str, auth: &'static str) -> Self {
        self.token = Some(token.into());
        self.auth = auth;
        self
    }

    fn credentials(mut self, username: &str, password: &str) -> Self {
        self.username = username.into();
        self.password = password.into();
        self
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    assert!(!s.chars().any(char::is_control), "{s:?}");
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// How a popsync run ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit status {:?} after {:?}\n--- stdout:\n{}--- stderr:\n{}---",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

impl Run {
    #[track_caller]
    fn assert_exit(&self, code: i32) {
        assert_eq!(self.code, Some(code), "popsync {self}");
    }

    #[track_caller]
    fn assert_stderr_says(&self, text: &str) {
        assert!(
            self.stderr.contains(text),
            "stderr should mention {text:?}; popsync {self}"
        );
    }

    #[track_caller]
    fn assert_never_shows(&self, secret: &str) {
        assert!(
            !self.stderr.contains(secret) && !self.stdout.contains(secret),
            "popsync printed the secret {secret:?}; popsync {self}"
        );
    }
}

/// A private directory for one popsync user: config, state, Maildir, working directory.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("popsync-faults-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("cwd/deeper")).unwrap();
        Self { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn maildir(&self) -> PathBuf {
        self.root().join("Mail")
    }

    fn state_dir(&self) -> PathBuf {
        self.root().join("state")
    }

    fn config_path(&self) -> PathBuf {
        self.root().join("config.toml")
    }

    fn write_config(&self, port: u16, setup: &Setup) {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let text = format!(
            "state-dir = {state}\n\
             \n\
             [[account]]\n\
             name = {ACCOUNT:?}\n\
             host = \"127.0.0.1\"\n\
             port = {port}\n\
             security = {security}\n\
             auth = {auth}\n\
             username = {username}\n\
             {password}\n\
             maildir = {maildir}\n\
             retention = {retention}\n\
             timeout = {timeout}\n\
             forget-after = {forget_after}\n",
            state = toml_string(self.state_dir().to_str().unwrap()),
            security = toml_string(setup.security),
            auth = toml_string(setup.auth),
            username = toml_string(&setup.username),
            password = match &setup.token {
                None => format!("password = {}", toml_string(&setup.password)),
                Some(t) => format!(
                    "oauth2-token-command = [\"printf\", \"%s\\n\", {}]",
                    toml_string(t)
                ),
            },
            maildir = toml_string(self.maildir().to_str().unwrap()),
            retention = toml_string(setup.retention),
            timeout = toml_string(setup.timeout),
            forget_after = toml_string(setup.forget_after),
        );
        let path = self.config_path();
        let _ = std::fs::remove_file(&path);
        // Private from the start: the loader refuses a readable file holding a password.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    /// Serves `sessions` and runs `popsync fetch ARGS` against them. Panics with the
    /// server's report (and popsync's output) if popsync did not follow the scripts.
    fn fetch(&self, setup: &Setup, args: &[&str], sessions: Vec<Vec<Step>>) -> Run {
        self.fetch_with(setup, args, |_| sessions)
    }

    /// Like [`fetch`](Self::fetch), with scripts made knowing the server's port.
    fn fetch_with(
        &self,
        setup: &Setup,
        args: &[&str],
        sessions: impl FnOnce(u16) -> Vec<Vec<Step>>,
    ) -> Run {
        let server = ScriptServer::start_with(sessions);
        self.write_config(server.port(), setup);
        let run = self.popsync(args);
        if let Err(report) = server.try_finish() {
            panic!("{report}\npopsync {run}");
        }
        run
    }

    /// `popsync check` against these scripts.
    fn check(&self, setup: &Setup, sessions: Vec<Vec<Step>>) -> Run {
        let server = ScriptServer::start_with(|_| sessions);
        self.write_config(server.port(), setup);
        let run = self.run_popsync(&["check"]);
        if let Err(report) = server.try_finish() {
            panic!("{report}\npopsync {run}");
        }
        run
    }

    fn popsync(&self, args: &[&str]) -> Run {
        let all: Vec<&str> = ["fetch", "--no-progress"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        self.run_popsync(&all)
    }

    fn run_popsync(&self, args: &[&str]) -> Run {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_popsync"))
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .current_dir(self.root().join("cwd/deeper"))
            .env_remove("POPSYNC_CONFIG")
            .env_remove("POPSYNC_STATE_DIR")
            .env_remove("RUST_LOG")
            .env("HOME", self.root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start popsync");
        let collect = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > POPSYNC_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "popsync did not exit within {POPSYNC_DEADLINE:?}; stderr:\n{}",
                    stderr.join().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Run {
            code: status.code(),
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
            elapsed: started.elapsed(),
        }
    }

    /// The names and contents of the files in one Maildir subdirectory, by name.
    fn files(&self, sub: &str) -> Vec<(String, Vec<u8>)> {
        let dir = self.maildir().join(sub);
        let mut out: Vec<(String, Vec<u8>)> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().into_string().unwrap(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("{}: {e}", dir.display()),
        };
        out.sort();
        out
    }

    /// The messages in `new/`, in a stable order (by content).
    fn delivered(&self) -> Vec<Vec<u8>> {
        let mut contents: Vec<Vec<u8>> = self.files("new").into_iter().map(|(_, c)| c).collect();
        contents.sort();
        contents
    }

    /// Asserts that `new/` holds exactly `messages` (each once, stored with LF endings) and
    /// that `cur/` and `tmp/` are empty.
    #[track_caller]
    fn assert_maildir_holds(&self, messages: &[usize]) {
        let mut expected: Vec<Vec<u8>> = messages.iter().map(|&n| stored(&mail(n))).collect();
        expected.sort();
        let shown = |v: &[Vec<u8>]| -> Vec<String> {
            v.iter()
                .map(|m| {
                    String::from_utf8_lossy(m)
                        .lines()
                        .nth(2)
                        .unwrap_or("")
                        .to_owned()
                })
                .collect()
        };
        let delivered = self.delivered();
        assert!(
            delivered == expected,
            "new/ should hold {:?}, holds {:?}",
            shown(&expected),
            shown(&delivered)
        );
        for sub in ["tmp", "cur"] {
            let names: Vec<String> = self.files(sub).into_iter().map(|(n, _)| n).collect();
            assert!(names.is_empty(), "{sub}/ must be empty, holds {names:?}");
        }
    }

    /// Every message the state database knows, by unique-id.
    fn states(&self) -> BTreeMap<String, MessageState> {
        let mut store = Store::open(&self.state_dir()).unwrap();
        let id = store.account(ACCOUNT, 0).unwrap();
        store
            .known(id)
            .unwrap()
            .iter()
            .map(|(uid, known)| (String::from_utf8(uid.to_vec()).unwrap(), known.state))
            .collect()
    }

    /// Every file under the fixture's directory, as paths relative to it.
    fn all_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                let path = entry.path();
                if entry.file_type().unwrap().is_dir() {
                    walk(&path, root, out);
                } else {
                    out.push(path.strip_prefix(root).unwrap().to_owned());
                }
            }
        }
        let mut out = Vec::new();
        walk(self.root(), self.root(), &mut out);
        out.sort();
        out
    }
}

fn states(entries: &[(&str, MessageState)]) -> BTreeMap<String, MessageState> {
    entries.iter().map(|(u, s)| ((*u).to_owned(), *s)).collect()
}

/// Where `part` starts in the dot-stuffed form of `message` (to cut a body there).
fn offset_in_stuffed(message: &[u8], part: &str) -> usize {
    let stuffed = popsync::pop3::codec::stuff(message);
    stuffed
        .windows(part.len())
        .position(|w| w == part.as_bytes())
        .unwrap()
}

/// A file name of popsync's own Maildir form: `SECS.M<usec>P<pid>Q<seq>R<hex>.HOST`.
fn is_popsync_name(name: &str) -> bool {
    let mut parts = name.splitn(3, '.');
    let (Some(secs), Some(unique), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !secs.is_empty()
        && secs.bytes().all(|b| b.is_ascii_digit())
        && unique.starts_with('M')
        && ['P', 'Q', 'R'].iter().all(|c| unique.contains(*c))
        && unique.bytes().all(|b| b.is_ascii_alphanumeric())
        && !host.is_empty()
        && !host.contains('/')
}

// ----------------------------------------------------------------------------------------
// Connections that break

#[test]
fn a_drop_mid_message_keeps_the_whole_one_and_the_next_run_fetches_only_the_rest() {
    let fx = Fixture::new();
    let setup = Setup::default();
    let mailbox = Mailbox::new(&["uid-1", "uid-2"]);
    // Message 2 is cut after its headers, then the connection closes.
    let cut = offset_in_stuffed(&mail(2), "This is message 2");
    let run = fx.fetch(
        &setup,
        &[],
        vec![
            [
                login(CAPS),
                mailbox.listings(),
                retr(1),
                vec![expect("RETR 2"), partial(&mail(2), cut), close()],
            ]
            .concat(),
        ],
    );
    run.assert_exit(75);
    run.assert_stderr_says("the server closed the connection");
    fx.assert_maildir_holds(&[1]);
    for file in fx.all_files() {
        let content = std::fs::read(fx.root().join(&file)).unwrap();
        let text = String::from_utf8_lossy(&content);
        assert!(
            !text.contains("Subject: message 2"),
            "part of message 2 was left in {}",
            file.display()
        );
    }
    assert_eq!(fx.states(), states(&[("uid-1", Delivered)]));

    // The next run downloads message 2 only: the script has no RETR 1.
    let run = fx.fetch(
        &setup,
        &[],
        // The listing holds a message popsync knew: one session is enough.
        vec![[login(CAPS), mailbox.listings(), retr(2), quit()].concat()],
    );
    run.assert_exit(0);
    fx.assert_maildir_holds(&[1, 2]);
    assert_eq!(
        fx.states(),
        states(&[("uid-1", Delivered), ("uid-2", Delivered)])
    );
}

#[test]
fn a_dot_line_after_a_bare_lf_inside_a_message_does_not_end_it() {
    // A CRLF server stuffs only lines that follow CRLF. This message holds a bare LF followed
    // by a "." line: taking that for the end would store half the message and then, with
    // retention = "delete", delete the whole one from the server.
    let fx = Fixture::new();
    let setup = Setup::default().retention("delete");
    let body: &[u8] = b"Subject: report\r\n\r\nfirst part\n.\r\nsecond part that matters\r\n..\r\n";
    let mut answer = b"+OK\r\n".to_vec();
    answer.extend_from_slice(body);
    answer.extend_from_slice(b".\r\n");
    let mailbox = Mailbox::new(&["uid-1"]);
    let run = fx.fetch(
        &setup,
        &[],
        vec![
            [
                login(CAPS),
                mailbox.listings(),
                vec![expect("RETR 1"), raw(answer)],
                dele(1),
                quit(),
            ]
            .concat(),
        ],
    );
    run.assert_exit(0);
    let delivered = fx.delivered();
    assert_eq!(
        delivered,
        vec![b"Subject: report\n\nfirst part\n.\nsecond part that matters\n.\n".to_vec()]
    );
}

#[test]
fn a_drop_mid_message_while_pipelining_keeps_only_the_whole_ones() {
    let fx = Fixture::new();
    let mailbox = Mailbox::new(&["uid-1", "uid-2", "uid-3"]);
    let cut = offset_in_stuffed(&mail(2), "This is message 2");
    let run = fx.fetch(
        &Setup::default().retention("delete"),
        &[],
        vec![
            [
                login(CAPS_PIPELINING),
                mailbox.listings(),
                vec![
                    expect("RETR 1"),
                    expect("RETR 2"),
                    expect("RETR 3"),
                    message(&mail(1)),
                    partial(&mail(2), cut),
                    close(),
                ],
            ]
            .concat(),
        ],
    );
    run.assert_exit(75);
    run.assert_stderr_says("the server closed the connection");
    fx.assert_maildir_holds(&[1]);
    // Delivered, but not deleted: that session never reached DELE.
    assert_eq!(fx.states(), states(&[("uid-1", Delivered)]));
}

#[test]
fn deletions_cut_off_before_quit_is_answered_are_sent_again_without_downloading_again() {
    let fx = Fixture::new();
    let setup = Setup::default().retention("delete");
    let mailbox = Mailbox::new(&["uid-1", "uid-2"]);
    let run = fx.fetch(
        &setup,
        &[],
        vec![
            [
                login(CAPS),
                mailbox.listings(),
                retr(1),
                retr(2),
                dele(1),
                dele(2),
                // The connection breaks instead of QUIT's +OK: the server deletes nothing.
                vec![expect("QUIT"), close()],
            ]
            .concat(),
        ],
    );
    run.assert_exit(75);
    run.assert_stderr_says("the server closed the connection");
    fx.assert_maildir_holds(&[1, 2]);
    assert_eq!(
        fx.states(),
        states(&[("uid-1", DeletePending), ("uid-2", DeletePending)])
    );

    // Still listed next time: deleted again, not downloaded again (no RETR in the script).
    let run = fx.fetch(
        &setup,
        &[],
        vec![[login(CAPS), mailbox.uidl_only(), dele(1), dele(2), quit()].concat()],
    );
    run.assert_exit(0);
    fx.assert_maildir_holds(&[1, 2]);
    assert_eq!(
        fx.states(),
        states(&[("uid-1", Deleted), ("uid-2", Deleted)])
    );
}

#[test]
fn a_message_the_server_refuses_to_hand_out_is_fetched_next_time_and_the_others_are_delivered() {
    let fx = Fixture::new();
    let setup = Setup::default();
    let mailbox = Mailbox::new(&["uid-1", "uid-2", "uid-3"]);
    let run = fx.fetch(
        &setup,
        &[],
        vec![
            [
                login(CAPS_PIPELINING),
                mailbox.listings(),
                vec![
                    expect("RETR 1"),
                    expect("RETR 2"),
                    expect("RETR 3"),
                    message(&mail(1)),
                    send("-ERR message 2 is being scanned for viruses"),
                    message(&mail(3)),
                ],
                quit(),
            ]
            .concat(),
        ],
    );
    run.assert_exit(75);
    run.assert_stderr_says("the server refused to hand out 1 message");
    run.assert_stderr_says("-ERR message 2 is being scanned for viruses");
    fx.assert_maildir_holds(&[1, 3]);
    assert_eq!(
        fx.states(),
        states(&[("uid-1", Delivered), ("uid-3", Delivered)])
    );

    let run = fx.fetch(
        &setup,
        &[],
        vec![[login(CAPS_PIPELINING), mailbox.listings(), retr(2), quit()].concat()],
    );
    run.assert_exit(0);
    fx.assert_maildir_holds(&[1, 2, 3]);
    assert_eq!(
        fx.states(),
        states(&[
            ("uid-1", Delivered),
            ("uid-2", Delivered),
            ("uid-3", Delivered)
        ])
    );
}

/// A listing as long as a server's portion, all new: `uid-1` … `uid-N`.
fn a_portion() -> Mailbox {
    let uids: Vec<String> = (1..=PORTION_MIN).map(|n| format!("uid-{n}")).collect();
    Mailbox::new(&uids)
}

#[test]
fn a_server_that_hands_out_mail_in_portions_is_asked_again_until_it_has_nothing_new() {
    // Like Gmail: each session lists only messages not handed out before, a portion at a
    // time; the last portion (shorter) is the rest, and no session follows it.
    let fx = Fixture::new();
    let setup = Setup::default();
    let first = a_portion();
    let rest = Mailbox::new(&["uid-101", "uid-102"]);
    let run = fx.fetch(
        &setup,
        &[],
        vec![
            [
                login(CAPS),
                first.listings(),
                (1..=PORTION_MIN).flat_map(retr).collect(),
                quit(),
            ]
            .concat(),
            [
                login(CAPS),
                rest.listings(),
                vec![expect("RETR 1"), message(&mail(PORTION_MIN + 1))],
                vec![expect("RETR 2"), message(&mail(PORTION_MIN + 2))],
                quit(),
            ]
            .concat(),
        ],
    );
    run.assert_exit(0);
    let all: Vec<usize> = (1..=PORTION_MIN + 2).collect();
    fx.assert_maildir_holds(&all);
    let uids: Vec<String> = all.iter().map(|n| format!("uid-{n}")).collect();
    let want: Vec<(&str, MessageState)> = uids.iter().map(|u| (u.as_str(), Delivered)).collect();
    assert_eq!(fx.states(), states(&want));
}

#[test]
fn asking_again_for_more_mail_and_being_refused_keeps_the_first_sessions_mail() {
    let fx = Fixture::new();
    let setup = Setup::default();
    let mailbox = a_portion();
    let mut sessions = vec![
        [
            login(CAPS),
            mailbox.listings(),
            (1..=PORTION_MIN).flat_map(retr).collect(),
            quit(),
        ]
        .concat(),
    ];
    // The second login comes too soon for this server.
    sessions.extend(refused_login(
        "-ERR [LOGIN-DELAY] Only one login every 15 minutes",
    ));
    let run = fx.fetch(&setup, &[], sessions);
    run.assert_exit(0);
    let all: Vec<usize> = (1..=PORTION_MIN).collect();
    fx.assert_maildir_holds(&all);
    assert_eq!(fx.states().len(), PORTION_MIN);
}

#[test]
fn a_server_announcing_a_login_delay_is_not_asked_again() {
    let fx = Fixture::new();
    let caps: Vec<&str> = [CAPS, &["LOGIN-DELAY 900"]].concat();
    let mailbox = Mailbox::new(&["uid-1"]);
    let run = fx.fetch(
        &Setup::default(),
        &[],
        vec![[login(&caps), mailbox.listings(), retr(1), quit()].concat()],
    );
    run.assert_exit(0);
    fx.assert_maildir_holds(&[1]);
}

/// A login refused for coming too soon, from a server that announced its delay between
/// logins: temporary (75), and the error says when the next login is allowed.
#[test]
fn a_login_refused_for_a_login_delay_says_when_the_next_is_allowed() {
    let fx = Fixture::new();
    let caps: Vec<&str> = [CAPS, &["LOGIN-DELAY 60"]].concat();
    let run = fx.fetch(
        &Setup::default(),
        &[],
        vec![
            [
                greet(GREETING, &caps),
                vec![
                    expect(format!("USER {USER}")),
                    send("+OK"),
                    expect(format!("PASS {PASSWORD}")),
                    send("-ERR [LOGIN-DELAY] wait a minute"),
                ],
            ]
            .concat(),
        ],
    );
    run.assert_exit(75);
    run.assert_stderr_says(
        "the server asks to wait before logging in again: -ERR [LOGIN-DELAY] wait a minute \
         (it allows one login every 1 min: the next is allowed by ",
    );
    fx.assert_maildir_holds(&[]);
}

/// `check` against a server that announces a delay between logins says that its own login
/// uses the window up, and when a fetch may log in.
#[test]
fn check_warns_that_its_login_uses_up_a_login_delay() {
    let fx = Fixture::new();
    let caps: Vec<&str> = [CAPS, &["LOGIN-DELAY 900"]].concat();
    let run = fx.check(
        &Setup::default(),
        vec![
            [
                login(&caps),
                vec![
                    expect("STAT"),
                    send("+OK 1 100"),
                    expect("UIDL"),
                    send("+OK"),
                    send("1 uid-1"),
                    send("."),
                ],
                quit(),
            ]
            .concat(),
        ],
    );
    run.assert_exit(0);
    assert!(
        run.stdout.contains(
            "login delay:    the server allows one login every 15 min: this check used it up, \
             so a fetch before "
        ),
        "{run}"
    );
}

#[test]
fn a_server_that_keeps_what_it_handed_out_gets_one_session() {
    let fx = Fixture::new();
    let setup = Setup::default();
    let run = fx.fetch(
        &setup,
        &[],
        // A first fetch lists nothing known, but one message is no portion: one session.
        vec![
            [
                login(CAPS),
                Mailbox::new(&["uid-1"]).listings(),
                retr(1),
                quit(),
            ]
            .concat(),
        ],
    );
    run.assert_exit(0);
    // Later: the old message is still listed next to a new one; no second session follows
    // (the script server fails the test if popsync connects again).
    let run = fx.fetch(
        &setup,
        &[],
        vec![
            [
                login(CAPS),
                Mailbox::new(&["uid-1", "uid-2"]).listings(),
                retr(2),
                quit(),
            ]
            .concat(),
        ],
    );
    run.assert_exit(0);
    assert_eq!(
        fx.states(),
        states(&[("uid-1", Delivered), ("uid-2", Delivered)])
    );
}

#[test]
fn a_server_that_briefly_lists_nothing_causes_no_download_again() {
    let fx = Fixture::new();
    let setup = Setup::default();
    let mailbox = Mailbox::new(&["uid-1", "uid-2"]);
    let first = vec![[login(CAPS), mailbox.listings(), retr(1), retr(2), quit()].concat()];
    fx.fetch(&setup, &[], first).assert_exit(0);
    // The server lists nothing (a glitch, or mail moved away and back) ...
    fx.fetch(&setup, &[], vec![nothing_new(CAPS, &Mailbox::empty())])
        .assert_exit(0);
    fx.fetch(&setup, &[], vec![nothing_new(CAPS, &Mailbox::empty())])
        .assert_exit(0);
    // ... then lists them again: within the grace period, nothing is downloaded again.
    fx.fetch(&setup, &[], vec![nothing_new(CAPS, &mailbox)])
        .assert_exit(0);
    fx.assert_maildir_holds(&[1, 2]);
    assert_eq!(
        fx.states(),
        states(&[("uid-1", Delivered), ("uid-2", Delivered)])
    );
}

#[test]
fn a_message_missing_for_longer_than_forget_after_is_forgotten() {
    let fx = Fixture::new();
    let setup = Setup::default().forget_after("0s");
    let mailbox = Mailbox::new(&["uid-1"]);
    let first = vec![[login(CAPS), mailbox.listings(), retr(1), quit()].concat()];
    fx.fetch(&setup, &[], first).assert_exit(0);
    // Missing once: remembered as missing. Missing again, past the grace period: forgotten.
    fx.fetch(&setup, &[], vec![nothing_new(CAPS, &Mailbox::empty())])
        .assert_exit(0);
    assert_eq!(fx.states(), states(&[("uid-1", Delivered)]));
    fx.fetch(&setup, &[], vec![nothing_new(CAPS, &Mailbox::empty())])
        .assert_exit(0);
    assert_eq!(fx.states(), states(&[]));
}

// ----------------------------------------------------------------------------------------
// Servers that stall

/// Asserts a run ended promptly with a timeout (timeout = "1s"), and left nothing behind.
#[track_caller]
fn assert_timed_out(fx: &Fixture, run: &Run) {
    run.assert_exit(75);
    run.assert_stderr_says("timed out after 1s");
    // Generous: this only tells "gave up after its timeout" from "hung until killed".
    assert!(
        run.elapsed < Duration::from_secs(15),
        "popsync took {:?} to give up",
        run.elapsed
    );
    fx.assert_maildir_holds(&[]);
    assert_eq!(fx.states(), states(&[]));
}

#[test]
fn a_server_that_never_greets_times_out() {
    let fx = Fixture::new();
    let run = fx.fetch(
        &Setup::default().timeout("1s"),
        &[],
        vec![vec![stall(LONG_STALL)]],
    );
    assert_timed_out(&fx, &run);
}

#[test]
fn a_server_that_falls_silent_after_the_greeting_times_out() {
    let fx = Fixture::new();
    let run = fx.fetch(
        &Setup::default().timeout("1s"),
        &[],
        vec![vec![send(GREETING), expect("CAPA"), stall(LONG_STALL)]],
    );
    assert_timed_out(&fx, &run);
}

#[test]
fn a_server_that_stalls_in_the_middle_of_a_message_times_out_and_leaves_no_partial_file() {
    let fx = Fixture::new();
    let mailbox = Mailbox::new(&["uid-1"]);
    let cut = offset_in_stuffed(&mail(1), "This is message 1");
    let run = fx.fetch(
        &Setup::default().timeout("1s"),
        &[],
        vec![
            [
                login(CAPS),
                mailbox.listings(),
                vec![expect("RETR 1"), partial(&mail(1), cut), stall(LONG_STALL)],
            ]
            .concat(),
        ],
    );
    assert_timed_out(&fx, &run);
}

// ----------------------------------------------------------------------------------------
// Servers that send nonsense

#[test]
fn garbage_instead_of_a_greeting_is_a_protocol_error() {
    let fx = Fixture::new();
    let run = fx.fetch(&Setup::default(), &[], vec![vec![raw("HELLO\r\n")]]);
    run.assert_exit(75);
    run.assert_stderr_says("protocol error: expected +OK or -ERR, got \"HELLO\"");
    fx.assert_maildir_holds(&[]);
    assert_eq!(fx.states(), states(&[]));
}

#[test]
fn an_overlong_line_in_the_uidl_listing_is_a_protocol_error() {
    let fx = Fixture::new();
    let mut answer = b"+OK\r\n".to_vec();
    answer.extend(std::iter::repeat_n(b'x', 100 * 1024));
    let run = fx.fetch(
        &Setup::default(),
        &[],
        vec![[login(CAPS), vec![expect("UIDL"), raw(answer)]].concat()],
    );
    run.assert_exit(75);
    run.assert_stderr_says("the server sent a line longer than 8192 bytes");
    fx.assert_maildir_holds(&[]);
    assert_eq!(fx.states(), states(&[]));
}

#[test]
fn hostile_unique_ids_never_become_paths_and_a_duplicate_switches_deletion_off() {
    let fx = Fixture::new();
    let long = "L".repeat(200);
    // Message 5 repeats message 4's unique-id.
    let mailbox = Mailbox::new(&["../../x", "/etc/passwd", long.as_str(), "dup", "dup"]);
    let run = fx.fetch(
        &Setup::default().retention("delete"),
        &[],
        vec![
            // Each unique-id is downloaded once; then QUIT straight away: no DELE at all.
            [
                login(CAPS),
                mailbox.listings(),
                retr(1),
                retr(2),
                retr(3),
                retr(4),
                quit(),
            ]
            .concat(),
        ],
    );
    run.assert_exit(0);
    run.assert_stderr_says("the server lists 1 unique-id(s) more than once");
    run.assert_stderr_says("nothing is deleted in this session");
    fx.assert_maildir_holds(&[1, 2, 3, 4]);
    assert_eq!(
        fx.states(),
        states(&[
            ("../../x", Delivered),
            ("/etc/passwd", Delivered),
            (long.as_str(), Delivered),
            ("dup", Delivered),
        ])
    );
    // Nothing but popsync's own files, under popsync's own names.
    for file in fx.all_files() {
        let ok = match file.parent().and_then(Path::to_str) {
            Some("") => file == Path::new("config.toml"),
            Some("state") => ["state.db", "state.db-wal", "state.db-shm"]
                .contains(&file.file_name().unwrap().to_str().unwrap()),
            Some("state/locks") => file == Path::new("state/locks/test.lock"),
            Some("Mail/new") => is_popsync_name(file.file_name().unwrap().to_str().unwrap()),
            _ => false,
        };
        assert!(ok, "unexpected file {}", file.display());
    }
    for uid_path in ["x", "cwd/x", "Mail/x", "Mail/new/../../x"] {
        assert!(!fx.root().join(uid_path).exists(), "{uid_path} exists");
    }
}

#[test]
fn list_sizes_that_lie_change_neither_framing_nor_content() {
    // LIST sizes are server data, approximate at best: they may steer progress and batching,
    // never how much of a body is read or what is stored.
    let fx = Fixture::new();
    let mailbox = Mailbox::new(&["uid-1", "uid-2", "uid-3"]);
    let lying_list = listing(&[
        format!("1 {}", u64::MAX),
        format!("2 {}", u64::MAX),
        "3 1".to_owned(),
    ]);
    let run = fx.fetch(
        &Setup::default(),
        &[],
        vec![
            [
                login(CAPS),
                vec![expect("UIDL"), mailbox.uidl(), expect("LIST"), lying_list],
                retr(1),
                retr(2),
                retr(3),
                quit(),
            ]
            .concat(),
        ],
    );
    run.assert_exit(0);
    fx.assert_maildir_holds(&[1, 2, 3]);
}

// ----------------------------------------------------------------------------------------
// Servers popsync cannot use

#[test]
fn a_server_without_uidl_is_refused_as_unusable() {
    let fx = Fixture::new();
    let run = fx.fetch(
        &Setup::default(),
        &[],
        vec![
            [
                login(CAPS),
                vec![expect("UIDL"), send("-ERR unknown command")],
            ]
            .concat(),
        ],
    );
    run.assert_exit(78);
    run.assert_stderr_says(
        "the server does not support UIDL, which popsync needs to tell new messages from old ones \
         (identify-by = \"headers\" tells them apart by their headers instead",
    );
    fx.assert_maildir_holds(&[]);
    assert_eq!(fx.states(), states(&[]));
}

#[test]
fn starttls_against_a_server_without_stls_ends_before_any_credentials_are_sent() {
    let fx = Fixture::new();
    // popsync hangs up right after CAPA, without QUIT: the script ends there, so any further
    // line (USER, PASS, AUTH, APOP, even QUIT) would be a failure.
    let run = fx.fetch(
        &Setup::default().security("starttls"),
        &[],
        vec![greet(GREETING, CAPS)],
    );
    run.assert_exit(78);
    run.assert_stderr_says(
        "the server does not offer STLS; refusing to continue without encryption",
    );
    fx.assert_maildir_holds(&[]);
}

#[test]
fn starttls_refused_by_the_server_ends_before_any_credentials_are_sent() {
    let fx = Fixture::new();
    let caps = [CAPS, &["STLS"]].concat();
    let run = fx.fetch(
        &Setup::default().security("starttls"),
        &[],
        vec![
            [
                greet(GREETING, &caps),
                vec![expect("STLS"), send("-ERR TLS is not available right now")],
            ]
            .concat(),
        ],
    );
    run.assert_exit(78);
    run.assert_stderr_says("the server refused STLS: -ERR TLS is not available right now");
    fx.assert_maildir_holds(&[]);
}

#[test]
fn a_failed_stls_handshake_never_falls_back_to_plaintext() {
    let fx = Fixture::new();
    let caps = [CAPS, &["STLS"]].concat();
    // A line slipped in after STLS's answer must be thrown away, not read as if it had come
    // over TLS (RFC 2595 section 4). The handshake then fails; any further line, or a second
    // connection, would be a failure of the script.
    let run = fx.fetch(
        &Setup::default().security("starttls"),
        &[],
        vec![
            [
                greet(GREETING, &caps),
                vec![
                    expect("STLS"),
                    raw("+OK Begin TLS negotiation\r\n+OK injected\r\n"),
                    refuse_tls(),
                ],
            ]
            .concat(),
        ],
    );
    run.assert_exit(75);
    run.assert_stderr_says("discarded 14 bytes the server sent before the TLS handshake");
    run.assert_stderr_says("TLS handshake failed");
    fx.assert_maildir_holds(&[]);
}

// ----------------------------------------------------------------------------------------
// Logging in

/// A USER/PASS login whose PASS is answered with `answer`; the client must then hang up.
fn refused_login(answer: &str) -> Vec<Vec<Step>> {
    vec![
        [
            greet(GREETING, CAPS),
            vec![
                expect(format!("USER {USER}")),
                send("+OK"),
                expect(format!("PASS {PASSWORD}")),
                send(answer),
            ],
        ]
        .concat(),
    ]
}

#[test]
fn a_server_that_greets_with_err_is_busy_not_refusing_the_login() {
    // Servers under load greet "-ERR" (too many connections) before any credentials are
    // sent: try again later; nothing says the password is wrong.
    let fx = Fixture::new();
    let run = fx.fetch(
        &Setup::default(),
        &[],
        vec![vec![send("-ERR Too many connections, try again later")]],
    );
    run.assert_exit(75);
    run.assert_stderr_says("-ERR Too many connections, try again later");
    assert!(!run.stderr.contains("login refused"), "popsync {run}");
}

#[test]
fn a_wrong_password_exits_with_the_authentication_status() {
    let fx = Fixture::new();
    let run = fx.fetch(
        &Setup::default(),
        &[],
        refused_login("-ERR [AUTH] Authentication failed."),
    );
    run.assert_exit(77);
    run.assert_stderr_says("login refused (USER/PASS): -ERR [AUTH] Authentication failed.");
    run.assert_never_shows(PASSWORD);
}

#[test]
fn a_mailbox_in_use_is_a_temporary_failure() {
    let fx = Fixture::new();
    let run = fx.fetch(
        &Setup::default(),
        &[],
        refused_login("-ERR [IN-USE] Mailbox is locked by another POP3 session"),
    );
    run.assert_exit(75);
    run.assert_stderr_says("the mailbox is in use by another session");
}

#[test]
fn a_permanent_server_problem_at_login_is_reported_as_permanent() {
    let fx = Fixture::new();
    let run = fx.fetch(
        &Setup::default(),
        &[],
        refused_login("-ERR [SYS/PERM] This account has been disabled"),
    );
    run.assert_exit(78);
    run.assert_stderr_says(
        "permanent server problem: -ERR [SYS/PERM] This account has been disabled",
    );
}

#[test]
fn apop_is_preferred_over_plaintext_and_sends_the_rfc_1939_digest() {
    let fx = Fixture::new();
    let caps = [CAPS, &["SASL PLAIN"]].concat();
    let run = fx.fetch(
        &Setup::default().credentials("mrose", "tanstaaf"),
        &[],
        vec![
            [
                greet(
                    "+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>",
                    &caps,
                ),
                vec![
                    expect("APOP mrose c4c9334bac560ecc979e58001b3e22fb"),
                    send("+OK maildrop has 0 messages"),
                    expect("CAPA"),
                    listing(&caps),
                ],
                Mailbox::empty().uidl_only(),
                quit(),
            ]
            .concat(),
        ],
    );
    run.assert_exit(0);
    run.assert_never_shows("tanstaaf");
}

#[test]
fn a_sasl_plain_response_too_long_for_one_line_is_sent_after_the_continuation() {
    let fx = Fixture::new();
    let password = "correct horse battery staple ".repeat(7);
    let response =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0{password}"));
    assert!(
        format!("AUTH PLAIN {response}\r\n").len() > 255,
        "the test needs a response over RFC 5034's 255 octets"
    );
    let caps = [CAPS, &["SASL PLAIN"]].concat();
    let run = fx.fetch(
        &Setup::default().credentials(USER, &password),
        &[],
        vec![
            [
                greet(GREETING, &caps),
                vec![
                    expect("AUTH PLAIN"),
                    send("+ "),
                    expect(response.as_str()),
                    send("+OK logged in"),
                    expect("CAPA"),
                    listing(&caps),
                ],
                Mailbox::empty().uidl_only(),
                quit(),
            ]
            .concat(),
        ],
    );
    run.assert_exit(0);
}

// ----------------------------------------------------------------------------------------
// Pipelining

#[test]
fn with_pipelining_32_retrs_and_32_deles_are_in_flight_before_the_first_answer() {
    const MESSAGES: usize = 40;
    const WINDOW: usize = 32;
    let fx = Fixture::new();
    let uids: Vec<String> = (1..=MESSAGES).map(|n| format!("uid-{n}")).collect();
    let mailbox = Mailbox::new(&uids);
    let mut session = [login(CAPS_PIPELINING), mailbox.listings()].concat();
    // The first 32 RETRs arrive before any answer, and not one more.
    session.extend((1..=WINDOW).map(|n| expect(format!("RETR {n}"))));
    session.push(quiet(Duration::from_millis(100)));
    // Then each answer lets one more in.
    for n in 1..=MESSAGES {
        session.push(message(&mail(n)));
        if n + WINDOW <= MESSAGES {
            session.push(expect(format!("RETR {}", n + WINDOW)));
        }
    }
    // The same for DELE.
    session.extend((1..=WINDOW).map(|n| expect(format!("DELE {n}"))));
    session.push(quiet(Duration::from_millis(100)));
    for n in 1..=MESSAGES {
        session.push(send(&format!("+OK message {n} deleted")));
        if n + WINDOW <= MESSAGES {
            session.push(expect(format!("DELE {}", n + WINDOW)));
        }
    }
    session.extend(quit());
    let run = fx.fetch(&Setup::default().retention("delete"), &[], vec![session]);
    run.assert_exit(0);
    fx.assert_maildir_holds(&(1..=MESSAGES).collect::<Vec<_>>());
    let expected: BTreeMap<String, MessageState> =
        uids.iter().map(|u| (u.clone(), Deleted)).collect();
    assert_eq!(fx.states(), expected);
}

#[test]
fn without_pipelining_every_command_waits_for_its_answer() {
    let fx = Fixture::new();
    let mailbox = Mailbox::new(&["uid-1", "uid-2", "uid-3"]);
    // lockstep: after each line, the client must send nothing until it has the answer.
    let run = fx.fetch(
        &Setup::default().retention("delete"),
        &[],
        vec![lockstep(
            [
                login(CAPS),
                mailbox.listings(),
                retr(1),
                retr(2),
                retr(3),
                dele(1),
                dele(2),
                dele(3),
                quit(),
            ]
            .concat(),
        )],
    );
    run.assert_exit(0);
    fx.assert_maildir_holds(&[1, 2, 3]);
    assert_eq!(
        fx.states(),
        states(&[("uid-1", Deleted), ("uid-2", Deleted), ("uid-3", Deleted)])
    );
}

#[test]
fn expect_alone_catches_a_client_that_does_not_wait() {
    // The check above must be able to fail: a "client" that sends two commands at once.
    let server = ScriptServer::start(vec![vec![
        send(GREETING),
        expect_alone("CAPA"),
        listing(CAPS),
    ]]);
    let mut client = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    let mut greeting = [0u8; GREETING.len() + 2];
    client.read_exact(&mut greeting).unwrap();
    std::io::Write::write_all(&mut client, b"CAPA\r\nUSER me\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    drop(client);
    let report = server.try_finish().unwrap_err();
    assert!(
        report.contains("session 1, step 2 (expect \"CAPA\" and nothing after it)")
            && report.contains("the client sent \"USER me\" without waiting"),
        "{report}"
    );
}

#[test]
fn the_script_server_reports_a_wrong_line_with_its_step_and_the_transcript() {
    let server = ScriptServer::start(vec![vec![
        send(GREETING),
        expect("CAPA"),
        send("-ERR no CAPA here"),
        expect("USER me"),
    ]]);
    let mut client = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    std::io::Write::write_all(&mut client, b"CAPA\r\nUSER you\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    drop(client);
    let report = server.try_finish().unwrap_err();
    assert!(
        report.contains(
            "session 1, step 4 (expect \"USER me\"): expected \"USER me\", got \"USER you\""
        ) && report.contains(
            "transcript of session 1:\n    S: \"+OK scripted POP3 server ready\"\n    C: \"CAPA\""
        ),
        "{report}"
    );
}

// ----------------------------------------------------------------------------------------
// The protocol transcript

#[test]
fn the_trace_transcript_shows_pass_redacted_and_never_the_password() {
    let fx = Fixture::new();
    let mailbox = Mailbox::new(&["uid-1"]);
    let run = fx.fetch(
        &Setup::default(),
        &["-vvv"],
        vec![[login(CAPS), mailbox.listings(), retr(1), quit()].concat()],
    );
    run.assert_exit(0);
    run.assert_stderr_says(&format!("C: USER {USER}"));
    run.assert_stderr_says("C: PASS <redacted>");
    run.assert_stderr_says("C: RETR 1");
    run.assert_never_shows(PASSWORD);
    fx.assert_maildir_holds(&[1]);
}

#[test]
fn the_trace_transcript_shows_sasl_plain_redacted_and_never_the_password() {
    let fx = Fixture::new();
    let response =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0{PASSWORD}"));
    let caps = [CAPS, &["SASL PLAIN"]].concat();
    let run = fx.fetch(
        &Setup::default(),
        &["-vvv"],
        vec![
            [
                greet(GREETING, &caps),
                vec![
                    expect(format!("AUTH PLAIN {response}")),
                    send("+OK logged in"),
                    expect("CAPA"),
                    listing(&caps),
                ],
                Mailbox::empty().uidl_only(),
                quit(),
            ]
            .concat(),
        ],
    );
    run.assert_exit(0);
    run.assert_stderr_says("C: AUTH PLAIN <redacted>");
    run.assert_never_shows(PASSWORD);
    run.assert_never_shows(&response);
}

// ----------------------------------------------------------------------------------------
// The client library on its own

#[test]
fn the_client_sends_stat_noop_rset_and_quit_as_written() {
    use popsync::pop3::{
        self, ConnectOptions, Credentials, Secret, Security, Timeouts, TlsOptions,
    };
    let server = ScriptServer::start(vec![
        [
            login(CAPS),
            vec![
                expect("STAT"),
                send("+OK 2 320"),
                expect("NOOP"),
                send("+OK"),
                expect("RSET"),
                send("+OK maildrop has 2 messages"),
                expect("STAT"),
                send("-ERR [SYS/TEMP] try later"),
            ],
            quit(),
        ]
        .concat(),
    ]);
    let options = ConnectOptions {
        host: "127.0.0.1".into(),
        port: server.port(),
        security: Security::DangerousPlaintext,
        tls: TlsOptions::default(),
        timeouts: Timeouts::uniform(Duration::from_secs(5)),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let credentials = Credentials::password(USER, Secret::new(PASSWORD));
        let greeted = pop3::connect(&options).await.unwrap();
        let mut s = greeted
            .login(&credentials, Some(pop3::AuthMethod::User))
            .await
            .unwrap();
        assert_eq!(s.stat().await.unwrap(), (2, 320));
        s.noop().await.unwrap();
        s.rset().await.unwrap();
        let err = s.stat().await.unwrap_err();
        assert!(err.is_transient() && !err.breaks_connection(), "{err}");
        s.quit().await.unwrap();
    });
    server.finish();
}

// ----------------------------------------------------------------------------------------
// OAuth2: SASL XOAUTH2 and OAUTHBEARER (RFC 7628)

const TOKEN: &str = "ya29.a0AfH6SMBx-test-token_value";

fn b64(raw: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

#[test]
fn xoauth2_sends_user_and_token_in_the_initial_response_and_never_a_password() {
    let fx = Fixture::new();
    let caps = [CAPS, &["SASL PLAIN XOAUTH2"]].concat();
    let response = b64(&format!("user={USER}\x01auth=Bearer {TOKEN}\x01\x01"));
    let run = fx.fetch(
        &Setup::default().token(TOKEN, "auto"),
        &[],
        vec![
            [
                greet(GREETING, &caps),
                vec![
                    expect(format!("AUTH XOAUTH2 {response}")),
                    send("+OK logged in"),
                    expect("CAPA"),
                    listing(&caps),
                ],
                Mailbox::empty().uidl_only(),
                quit(),
            ]
            .concat(),
        ],
    );
    run.assert_exit(0);
    run.assert_never_shows(TOKEN);
}

#[test]
fn oauthbearer_is_preferred_and_a_long_token_waits_for_the_continuation() {
    let fx = Fixture::new();
    let caps = [CAPS, &["SASL PLAIN XOAUTH2 OAUTHBEARER"]].concat();
    // A Microsoft 365 token is over a kilobyte.
    let token = format!("eyJ0eXAiOiJKV1Qi.{}", "x".repeat(1200));
    let run = fx.fetch_with(&Setup::default().token(&token, "auto"), &["-vvv"], |port| {
        let response = b64(&format!(
            "n,a={USER},\x01host=127.0.0.1\x01port={port}\x01auth=Bearer {token}\x01\x01"
        ));
        vec![
            [
                greet(GREETING, &caps),
                vec![
                    expect_alone("AUTH OAUTHBEARER"),
                    send("+ "),
                    expect(response),
                    send("+OK logged in"),
                    expect("CAPA"),
                    listing(&caps),
                ],
                Mailbox::empty().uidl_only(),
                quit(),
            ]
            .concat(),
        ]
    });
    run.assert_exit(0);
    run.assert_stderr_says("C: AUTH OAUTHBEARER");
    run.assert_stderr_says("C: <redacted>");
    run.assert_never_shows(&token[..40]);
}

#[test]
fn a_refused_oauthbearer_token_is_acknowledged_as_the_rfc_says_and_the_reason_shown() {
    let fx = Fixture::new();
    let caps = [CAPS, &["SASL OAUTHBEARER"]].concat();
    let challenge = b64(
        r#"{"status":"invalid_token","scope":"https://mail.example.com/","openid-configuration":"https://example.com/.well-known/openid-configuration"}"#,
    );
    let run = fx.fetch_with(&Setup::default().token(TOKEN, "oauthbearer"), &[], |port| {
        let response = b64(&format!(
            "n,a={USER},\x01host=127.0.0.1\x01port={port}\x01auth=Bearer {TOKEN}\x01\x01"
        ));
        vec![
            [
                greet(GREETING, &caps),
                vec![
                    expect(format!("AUTH OAUTHBEARER {response}")),
                    send(&format!("+ {challenge}")),
                    expect("AQ=="),
                    send("-ERR [AUTH] Authentication failed."),
                ],
            ]
            .concat(),
        ]
    });
    run.assert_exit(77);
    run.assert_stderr_says("SASL OAUTHBEARER");
    run.assert_stderr_says(r#""status":"invalid_token""#);
    run.assert_never_shows(TOKEN);
}

#[test]
fn a_refused_xoauth2_token_gets_the_empty_answer_google_expects() {
    let fx = Fixture::new();
    let caps = [CAPS, &["SASL XOAUTH2"]].concat();
    let response = b64(&format!("user={USER}\x01auth=Bearer {TOKEN}\x01\x01"));
    let challenge =
        b64(r#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#);
    let run = fx.fetch(
        &Setup::default().token(TOKEN, "auto"),
        &[],
        vec![
            [
                greet(GREETING, &caps),
                vec![
                    expect(format!("AUTH XOAUTH2 {response}")),
                    send(&format!("+ {challenge}")),
                    expect(""),
                    send("-ERR [AUTH] Invalid credentials"),
                ],
            ]
            .concat(),
        ],
    );
    run.assert_exit(77);
    run.assert_stderr_says(r#""status":"401""#);
    run.assert_stderr_says("Invalid credentials");
}

#[test]
fn a_token_is_never_offered_to_a_server_without_an_oauth_mechanism() {
    let fx = Fixture::new();
    let caps = [CAPS, &["SASL PLAIN"]].concat();
    let run = fx.fetch(
        &Setup::default().token(TOKEN, "auto"),
        &[],
        vec![greet(GREETING, &caps)],
    );
    run.assert_exit(77);
    run.assert_stderr_says("offers neither SASL OAUTHBEARER nor XOAUTH2");
    run.assert_never_shows(TOKEN);
}
