//! The systemd notification protocol (`sd_notify`): READY, STATUS, STOPPING and WATCHDOG
//! messages over the datagram socket systemd names in `$NOTIFY_SOCKET`. Without it (not
//! started by systemd, or not `Type=notify`), every call does nothing.

use std::time::Duration;

/// The connection to systemd's notification socket, if there is one.
#[derive(Debug)]
pub struct SdNotify {
    #[cfg(unix)]
    socket: Option<(
        std::os::unix::net::UnixDatagram,
        std::os::unix::net::SocketAddr,
    )>,
    watchdog: Option<Duration>,
}

impl SdNotify {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (honouring `$WATCHDOG_PID`).
    pub fn from_env() -> Self {
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|_| {
                std::env::var("WATCHDOG_PID")
                    .ok()
                    .and_then(|p| p.parse::<u32>().ok())
                    .is_none_or(|p| p == std::process::id())
            })
            .map(Duration::from_micros);
        Self {
            #[cfg(unix)]
            socket: std::env::var_os("NOTIFY_SOCKET").and_then(|p| connect(&p)),
            watchdog,
        }
    }

    /// How often systemd wants a watchdog ping (half its timeout), if it does.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    pub fn reloading(&self) {
        self.send("RELOADING=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    #[cfg(unix)]
    fn send(&self, message: &str) {
        if let Some((socket, addr)) = &self.socket
            && let Err(e) = socket.send_to_addr(message.as_bytes(), addr)
        {
            tracing::debug!("sd_notify failed: {e}");
        }
    }

    #[cfg(not(unix))]
    fn send(&self, _message: &str) {}
}

#[cfg(unix)]
fn connect(
    path: &std::ffi::OsStr,
) -> Option<(
    std::os::unix::net::UnixDatagram,
    std::os::unix::net::SocketAddr,
)> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = path.as_bytes();
    let addr = match bytes.first()? {
        b'/' => SocketAddr::from_pathname(std::path::Path::new(path)).ok()?,
        #[cfg(target_os = "linux")]
        b'@' => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..]).ok()?
        }
        _ => return None,
    };
    let socket = UnixDatagram::unbound().ok()?;
    Some((socket, addr))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let sd = SdNotify {
            socket: connect(path.as_os_str()),
            watchdog: Some(Duration::from_secs(20)),
        };
        sd.ready("polling 2 accounts");
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            text.starts_with("READY=1\nSTATUS=polling 2 accounts\nMAINPID="),
            "{text}"
        );
        sd.watchdog();
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        assert_eq!(sd.watchdog_interval(), Some(Duration::from_secs(10)));
    }

    #[test]
    fn without_a_socket_nothing_happens() {
        let sd = SdNotify {
            socket: None,
            watchdog: None,
        };
        sd.ready("x");
        sd.stopping();
        assert_eq!(sd.watchdog_interval(), None);
    }
}
