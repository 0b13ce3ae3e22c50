//! A private Dovecot POP3 server on loopback, one per test: its own directory, free ports,
//! a throw-away CA and server certificate, users in a passwd-file, Maildirs the test fills.
//! Plain POP3 with STLS on `plain_port`, implicit TLS on `tls_port`.
//!
//! Started as root (as in CI), Dovecot runs the mail processes as an unprivileged numeric
//! uid that needs no /etc/passwd entry; started as another user it runs everything as that
//! user.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "Dovecot-Pa55word-for-tests";
pub const USERS: &[&str] = &["user1", "user2", "user3", "user4"];
const MAIL_UID: u32 = 5000;

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Allow USER/PASS and AUTH PLAIN without TLS (for dangerous-plaintext tests).
    pub plaintext_auth: bool,
    /// Also accept SASL XOAUTH2 and OAUTHBEARER, the tokens checked by Dovecot's oauth2
    /// passdb against a token introspection endpoint (RFC 7662).
    pub oauth2: Option<OAuth2Passdb>,
    /// Also serve IMAP (`imap_port` with STARTTLS, `imaps_port` with implicit TLS), for
    /// delivery into an IMAP mailbox.
    pub imap: Option<ImapOptions>,
}

/// How the test Dovecot's IMAP service behaves.
#[derive(Debug, Clone, Default)]
pub struct ImapOptions {
    /// What it says it can do after login (`imap_capability`), to hide extensions
    /// (UIDPLUS, MULTIAPPEND, LITERAL+); `None` for Dovecot's own list.
    pub capability: Option<String>,
    /// A storage quota for every user (`quota_rule = *:storage=...`, e.g. "200K").
    pub quota: Option<String>,
}

/// Dovecot 2.3's own capability list after login, less what a test hides.
pub fn imap_capability_without(hidden: &[&str]) -> String {
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES \
     THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN \
     NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES \
     WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW \
     STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE"
        .split_whitespace()
        .filter(|w| !hidden.contains(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where Dovecot's oauth2 passdb asks whether a token is active, and which attribute of the
/// answer names the user.
#[derive(Debug, Clone)]
pub struct OAuth2Passdb {
    /// `http://[client:secret@]127.0.0.1:PORT/path`: the token is POSTed as `token=...`.
    pub introspection_url: String,
    pub username_attribute: String,
}

pub struct Dovecot {
    pub dir: tempfile::TempDir,
    pub plain_port: u16,
    pub tls_port: u16,
    /// IMAP with STARTTLS, and with implicit TLS (0 unless asked for in [`Options`]).
    pub imap_port: u16,
    pub imaps_port: u16,
    /// The CA that signed the server certificate (what `ca-file` points to).
    pub ca_file: PathBuf,
    /// The server certificate itself.
    pub cert_file: PathBuf,
    conf: PathBuf,
    uid: u32,
    gid: u32,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

fn id(flag: &str) -> String {
    let out = Command::new("id").arg(flag).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl Dovecot {
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Self {
        assert!(
            Command::new("dovecot")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "dovecot is not installed: apt-get install dovecot-core dovecot-pop3d dovecot-imapd (.ci/run does this)"
        );
        let dir = tempfile::Builder::new()
            .prefix("popsync-dovecot-")
            .tempdir()
            .unwrap();
        super::set_mode(dir.path(), 0o755);
        let (uid, gid) = if is_root() {
            (MAIL_UID, MAIL_UID)
        } else {
            (id("-u").parse().unwrap(), id("-g").parse().unwrap())
        };
        let tls = dir.path().join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        make_certificates(&tls);
        let users_file = dir.path().join("users");
        let mail_root = dir.path().join("mail");
        let mut users = String::new();
        for u in USERS {
            let home = mail_root.join(u);
            for sub in ["cur", "new", "tmp"] {
                std::fs::create_dir_all(home.join("Maildir").join(sub)).unwrap();
            }
            users.push_str(&format!(
                "{u}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{}::\n",
                home.display()
            ));
        }
        std::fs::write(&users_file, users).unwrap();
        chown_tree(&mail_root, uid, gid);
        super::set_mode(&mail_root, 0o755);

        for sub in ["run", "state", "log"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let conf = dir.path().join("dovecot.conf");
        let mut server = Self {
            ca_file: tls.join("ca.pem"),
            cert_file: tls.join("server.pem"),
            conf,
            plain_port: 0,
            tls_port: 0,
            imap_port: 0,
            imaps_port: 0,
            uid,
            gid,
            dir,
        };
        for _attempt in 0..5 {
            server.plain_port = free_port();
            server.tls_port = free_port();
            if options.imap.is_some() {
                server.imap_port = free_port();
                server.imaps_port = free_port();
            }
            let text = config(
                server.dir.path(),
                &users_file,
                [
                    server.plain_port,
                    server.tls_port,
                    server.imap_port,
                    server.imaps_port,
                ],
                uid,
                &options,
            );
            std::fs::write(&server.conf, text).unwrap();
            let status = Command::new("dovecot")
                .arg("-c")
                .arg(&server.conf)
                .status()
                .unwrap();
            if status.success() && server.wait_ready() {
                return server;
            }
            // Most likely a port was taken in the meantime: stop and try others.
            server.stop();
        }
        panic!("dovecot did not start:\n{}", server.log());
    }

    fn wait_ready(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let ports = [
                self.plain_port,
                self.tls_port,
                self.imap_port,
                self.imaps_port,
            ];
            if ports
                .iter()
                .filter(|p| **p != 0)
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn master_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("run/master.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The log once it says `needle` (Dovecot's log process writes it a moment after the
    /// fact), or as it is after [`super::PATIENCE`].
    pub fn log_once(&self, needle: &str) -> String {
        super::wait_for(super::PATIENCE, || {
            let log = self.log();
            log.contains(needle).then_some(log)
        })
        .unwrap_or_else(|| self.log())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log/dovecot.log")).unwrap_or_default()
    }

    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user).join("Maildir")
    }

    /// Delivers messages to a user's mailbox the way an MDA would (tmp/ then new/), with the
    /// sizes in the file name so Dovecot reports them exactly.
    pub fn add_messages(&self, user: &str, messages: &[Vec<u8>]) {
        let md = self.maildir(user);
        for m in messages {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let name = format!(
                "{}.M{n}P{}.test,S={},W={}",
                1_700_000_000 + n,
                std::process::id(),
                m.len(),
                super::corpus::wire_size(m)
            );
            let tmp = md.join("tmp").join(&name);
            std::fs::write(&tmp, m).unwrap();
            std::os::unix::fs::chown(&tmp, Some(self.uid), Some(self.gid)).unwrap();
            std::fs::rename(&tmp, md.join("new").join(&name)).unwrap();
        }
    }

    /// Messages in a user's server mailbox.
    pub fn message_count(&self, user: &str) -> usize {
        let md = self.maildir(user);
        ["new", "cur"]
            .iter()
            .map(|s| {
                std::fs::read_dir(md.join(s))
                    .map(|d| d.count())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Starts the server again after [`stop`](Self::stop), on the same ports.
    pub fn restart(&self) {
        let status = Command::new("dovecot")
            .arg("-c")
            .arg(&self.conf)
            .status()
            .unwrap();
        assert!(
            status.success() && self.wait_ready(),
            "dovecot did not start again:\n{}",
            self.log()
        );
    }

    /// Makes the server renumber `user`'s mailbox, as a lost `dovecot-uidlist` does: stopped,
    /// its uidlist and indexes removed, started again a second later (so the mailbox's new
    /// UIDVALIDITY, from the clock, differs). Every message then has a new unique-id.
    pub fn renumber(&self, user: &str) {
        self.stop();
        let md = self.maildir(user);
        for entry in std::fs::read_dir(&md).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("dovecot") {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(1100));
        self.restart();
    }

    /// Stops the server (as an outage would): its ports refuse connections until
    /// [`restart`](Self::restart).
    pub fn stop(&self) {
        if let Some(pid) = self.master_pid() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && alive(pid) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Whether a process is running. A daemon's parent may be a pid 1 that does not reap
/// children (as in some containers), so a zombie counts as gone.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it (EC keys: fast).
fn make_certificates(tls: &Path) {
    let ossl = |args: &[&str]| {
        let mut c = Command::new("openssl");
        c.current_dir(tls).args(args);
        run(&mut c);
    };
    std::fs::write(
        tls.join("ca.cnf"),
        "[req]\ndistinguished_name=dn\n[dn]\n[ext]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n",
    )
    .unwrap();
    std::fs::write(
        tls.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/O=popsync tests/CN=popsync test CA",
        "-config",
        "ca.cnf",
        "-extensions",
        "ext",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    ossl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-config",
        "ca.cnf",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    ossl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        "2",
        "-days",
        "30",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
}

fn config(
    dir: &Path,
    users: &Path,
    [plain_port, tls_port, imap_port, imaps_port]: [u16; 4],
    uid: u32,
    options: &Options,
) -> String {
    let d = dir.display();
    let (protocols, imap) = match &options.imap {
        None => ("pop3", String::new()),
        Some(imap) => {
            let mut text = format!(
                "service imap-login {{\n  {chroot}\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {imap_port}\n  }}\n  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {imaps_port}\n    ssl = yes\n  }}\n}}\n",
                chroot = if is_root() { "" } else { "chroot =" }
            );
            if let Some(caps) = &imap.capability {
                text.push_str(&format!("imap_capability = {caps}\n"));
            }
            if let Some(quota) = &imap.quota {
                text.push_str(&format!(
                    "mail_plugins = $mail_plugins quota\nplugin {{\n  quota = maildir:User quota\n  quota_rule = *:storage={quota}\n}}\n"
                ));
            }
            ("pop3 imap", text)
        }
    };
    // Unprivileged, everything runs as the caller, and chroot() needs root.
    let (unprivileged, chroot) = if is_root() {
        (String::new(), "")
    } else {
        let (user, group) = (id("-un"), id("-gn"));
        (
            format!(
                "default_internal_user = {user}\ndefault_internal_group = {group}\ndefault_login_user = {user}\nservice ipc {{\n  chroot =\n}}\n"
            ),
            "chroot =",
        )
    };
    format!(
        r#"# private Dovecot for one popsync test
instance_name = popsync-test-{plain_port}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/log/dovecot.log
info_log_path = {d}/log/dovecot.log
protocols = {protocols}
listen = 127.0.0.1
shutdown_clients = yes
{unprivileged}
ssl = yes
ssl_cert = <{d}/tls/server.pem
ssl_key = <{d}/tls/server.key
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = {plain}
auth_mechanisms = plain login{oauth_mechanisms}
auth_failure_delay = 0
auth_verbose = yes
{oauth_passdb}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {users}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {users}
}}

first_valid_uid = {uid}
last_valid_uid = {uid}
mail_location = maildir:~/Maildir
mail_max_userip_connections = 100
default_vsz_limit = 1G
pop3_uidl_format = %08Xu%08Xv

service pop3-login {{
  {chroot}
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {plain_port}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
service anvil {{
  {chroot}
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
{imap}
"#,
        users = users.display(),
        plain = if options.plaintext_auth { "no" } else { "yes" },
        oauth_mechanisms = if options.oauth2.is_some() {
            " xoauth2 oauthbearer"
        } else {
            ""
        },
        oauth_passdb = match &options.oauth2 {
            None => String::new(),
            Some(passdb) => {
                // Read when the auth process starts. "mechanisms" keeps passwords away from
                // the endpoint and tokens away from the passwd-file.
                let ext = dir.join("dovecot-oauth2.conf.ext");
                std::fs::write(
                    &ext,
                    format!(
                        "introspection_mode = post\nintrospection_url = {}\nusername_attribute = {}\nactive_attribute = active\nactive_value = true\ntimeout_msecs = 5000\n",
                        passdb.introspection_url, passdb.username_attribute,
                    ),
                )
                .unwrap();
                format!(
                    "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {}\n}}\n",
                    ext.display()
                )
            }
        },
    )
}
