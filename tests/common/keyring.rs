//! A real Secret Service on a test's private bus: GNOME Keyring's daemon (Debian package
//! gnome-keyring), started headless with a fresh home of its own, its login collection
//! created and unlocked with a throw-away password. `secret-tool` (libsecret-tools) is an
//! independent client to check what popsync stored.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::dbus::Bus;

pub struct Keyring {
    _dir: tempfile::TempDir,
    child: Child,
    address: String,
}

impl Keyring {
    pub fn start(bus: &Bus) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("popsync-keyring-")
            .tempdir()
            .unwrap();
        for sub in ["home", "run"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        super::set_mode(&dir.path().join("run"), 0o700);
        let mut child = Command::new("gnome-keyring-daemon")
            .args(["--unlock", "--components=secrets", "--foreground"])
            .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
            .env("HOME", dir.path().join("home"))
            .env("XDG_RUNTIME_DIR", dir.path().join("run"))
            .env("XDG_DATA_HOME", dir.path().join("home/.local/share"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start gnome-keyring-daemon ({e}): apt-get install gnome-keyring (scripts/test does this)")
            });
        // It reads the unlock password until the end of its input.
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"keyring-test-password").unwrap();
        drop(stdin);
        let keyring = Self {
            _dir: dir,
            child,
            address: bus.address().to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !keyring.serving() {
            assert!(
                Instant::now() < deadline,
                "gnome-keyring-daemon never took org.freedesktop.secrets on the bus"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        keyring
    }

    fn serving(&self) -> bool {
        Command::new("dbus-send")
            .args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.secrets",
            ])
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"))
            .unwrap_or(false)
    }

    /// `secret-tool ARGS` on this keyring's bus, with `input` on its stdin: success and stdout.
    pub fn secret_tool(&self, args: &[&str], input: Option<&str>) -> (bool, String) {
        let mut child = Command::new("secret-tool")
            .args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("secret-tool (apt-get install libsecret-tools)");
        let mut stdin = child.stdin.take().unwrap();
        if let Some(text) = input {
            stdin.write_all(text.as_bytes()).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// The password stored for popsync's `account`, as secret-tool finds it.
    pub fn lookup(&self, account: &str) -> Option<String> {
        let (ok, out) =
            self.secret_tool(&["lookup", "service", "popsync", "username", account], None);
        ok.then_some(out)
    }

    /// Stops the daemon (the bus stays).
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Keyring {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
