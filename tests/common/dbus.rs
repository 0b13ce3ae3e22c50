//! A private D-Bus session bus per test, and a stand-in desktop notification server on it
//! that records every call popsync makes.
//!
//! The bus is a real `dbus-daemon` (Debian package `dbus-daemon`) with a configuration of
//! its own: no service directories, so nothing on the machine (dunst, say) can be started
//! behind the test's back when a test wants no notification server at all.
//!
//! The notification server implements `org.freedesktop.Notifications` as notification
//! daemons do (GetCapabilities, Notify, CloseNotification, GetServerInformation), runs on a
//! thread of its own with its own tokio runtime, and can be told to emit `ActionInvoked`, as
//! when the user clicks a notification. In the hung mode it takes every call to Notify and
//! never answers.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

// The tests may use only popsync's own dependencies; zbus hands its stream trait out here.
use zbus::export::futures_core::Stream;

const NAME: &str = "org.freedesktop.Notifications";
const PATH: &str = "/org/freedesktop/Notifications";
const INTERFACE: &str = "org.freedesktop.Notifications";

/// A private session bus, stopped when dropped.
pub struct Bus {
    _dir: tempfile::TempDir,
    child: Child,
    address: String,
}

impl Bus {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("popsync-dbus-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("session.conf");
        std::fs::write(&config, bus_config(&dir.path().join("bus"))).unwrap();
        // Its complaints (it cannot raise its file limit when unprivileged, say) are kept
        // for when it does not start.
        let errors = dir.path().join("stderr");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .arg("--print-address=1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&errors).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start dbus-daemon ({e}): apt-get install dbus-daemon (scripts/test does this)")
            });
        // dbus-daemon prints the address once it listens (and exits if it cannot).
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_owned();
        if address.is_empty() {
            let _ = child.kill();
            panic!(
                "dbus-daemon did not start: {:?}\n{}",
                child.wait(),
                std::fs::read_to_string(&errors).unwrap_or_default()
            );
        }
        Self {
            _dir: dir,
            child,
            address,
        }
    }

    /// What `DBUS_SESSION_BUS_ADDRESS` says to reach this bus.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bus_config(socket: &std::path::Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}

/// One call to Notify, as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The id the server answered with (in the hung mode: the one it would have).
    pub id: u32,
    pub app_name: String,
    pub replaces_id: u32,
    pub app_icon: String,
    pub summary: String,
    pub body: String,
    pub actions: Vec<String>,
    /// String hints as they are; other hints as their debug form.
    pub hints: BTreeMap<String, String>,
    pub expire_timeout: i32,
}

impl Notification {
    pub fn hint(&self, key: &str) -> Option<&str> {
        self.hints.get(key).map(String::as_str)
    }
}

/// How the stand-in server behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers every call; advertises the "actions" capability or not.
    Normal { actions: bool },
    /// Answers GetCapabilities (without "actions") but never Notify.
    Hung,
}

/// Everything the server received.
#[derive(Debug, Default, Clone)]
pub struct Record {
    /// Methods called, in order (interface-less names such as `Notify`).
    pub calls: Vec<String>,
    pub notifications: Vec<Notification>,
    /// Ids passed to CloseNotification.
    pub closed: Vec<u32>,
}

enum Order {
    /// Emit ActionInvoked(id, key); say when it is sent.
    Action(u32, String, mpsc::Sender<()>),
    Stop,
}

/// The stand-in notification server, owning `org.freedesktop.Notifications` on a bus until
/// dropped.
pub struct NotificationServer {
    record: Arc<Mutex<Record>>,
    orders: tokio::sync::mpsc::UnboundedSender<Order>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NotificationServer {
    /// Starts serving on `bus`; returns once the name is owned.
    pub fn start(bus: &Bus, mode: Mode) -> Self {
        let record = Arc::new(Mutex::new(Record::default()));
        let (orders, order_rx) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let address = bus.address().to_owned();
        let rec = record.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(serve(address, mode, rec, order_rx, ready_tx));
        });
        match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the notification server could not start: {e}"),
            Err(e) => panic!("the notification server did not start: {e}"),
        }
        Self {
            record,
            orders,
            thread: Some(thread),
        }
    }

    /// Everything received so far.
    pub fn record(&self) -> Record {
        self.record.lock().unwrap().clone()
    }

    pub fn notifications(&self) -> Vec<Notification> {
        self.record().notifications
    }

    /// Waits (up to 20 s) until at least `n` notifications arrived; returns all of them.
    /// `context` is shown if they do not come (the daemon's log, say).
    pub fn wait_for(&self, n: usize, context: impl Fn() -> String) -> Vec<Notification> {
        super::wait_for(super::PATIENCE, || {
            let got = self.notifications();
            (got.len() >= n).then_some(got)
        })
        .unwrap_or_else(|| {
            panic!(
                "expected {n} notification(s), got {:#?}\n--- context\n{}",
                self.notifications(),
                context()
            )
        })
    }

    /// Emits `ActionInvoked(id, key)`, as when the user clicks the notification.
    pub fn invoke_action(&self, id: u32, key: &str) {
        let (tx, rx) = mpsc::channel();
        self.orders
            .send(Order::Action(id, key.to_owned(), tx))
            .unwrap();
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the notification server did not emit the signal");
    }
}

impl Drop for NotificationServer {
    fn drop(&mut self) {
        let _ = self.orders.send(Order::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn serve(
    address: String,
    mode: Mode,
    record: Arc<Mutex<Record>>,
    mut orders: tokio::sync::mpsc::UnboundedReceiver<Order>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let started: Fallible<(zbus::Connection, zbus::MessageStream)> = async {
        let conn = zbus::connection::Builder::address(address.as_str())
            .build()
            .await?;
        let stream = zbus::MessageStream::from(&conn);
        conn.request_name(NAME).await?;
        Ok((conn, stream))
    }
    .await;
    let (conn, mut stream) = match started {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let mut next_id = 1;
    loop {
        tokio::select! {
            msg = next_message(&mut stream) => match msg {
                Some(Ok(msg)) => {
                    if let Err(e) = answer(&conn, &msg, mode, &record, &mut next_id).await {
                        eprintln!("notification server: {e}");
                    }
                }
                Some(Err(e)) => eprintln!("notification server: {e}"),
                None => return,
            },
            order = orders.recv() => match order {
                Some(Order::Action(id, key, done)) => {
                    conn.emit_signal(None::<&str>, PATH, INTERFACE, "ActionInvoked", &(id, key.as_str()))
                        .await
                        .unwrap();
                    let _ = done.send(());
                }
                Some(Order::Stop) | None => return,
            },
        }
    }
}

async fn next_message(stream: &mut zbus::MessageStream) -> Option<zbus::Result<zbus::Message>> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

/// The arguments of Notify.
type NotifyArgs = (
    String,
    u32,
    String,
    String,
    String,
    Vec<String>,
    HashMap<String, zbus::OwnedVariant>,
    i32,
);

async fn answer(
    conn: &zbus::Connection,
    msg: &zbus::Message,
    mode: Mode,
    record: &Mutex<Record>,
    next_id: &mut u32,
) -> Fallible<()> {
    let header = msg.header();
    if header.message_type() != zbus::message::Type::MethodCall {
        return Ok(());
    }
    let member = header.member().map(|m| m.as_str().to_owned());
    let interface = header.interface().map(|i| i.as_str().to_owned());
    let Some(member) = member else {
        return Ok(());
    };
    if interface.as_deref().is_some_and(|i| i != INTERFACE) {
        conn.reply_error(
            &header,
            "org.freedesktop.DBus.Error.UnknownInterface",
            &"only org.freedesktop.Notifications here",
        )
        .await?;
        return Ok(());
    }
    record.lock().unwrap().calls.push(member.clone());
    match member.as_str() {
        "GetCapabilities" => {
            let caps: Vec<&str> = match mode {
                Mode::Normal { actions: true } => vec!["actions", "body", "body-markup"],
                _ => vec!["body", "body-markup"],
            };
            conn.reply(&header, &caps).await?;
        }
        "GetServerInformation" => {
            conn.reply(&header, &("popsync-test", "popsync", "1.0", "1.2"))
                .await?;
        }
        "Notify" => {
            let (app_name, replaces_id, app_icon, summary, body, actions, hints, expire_timeout): NotifyArgs =
                msg.body().deserialize()?;
            let id = if replaces_id != 0 {
                replaces_id
            } else {
                let id = *next_id;
                *next_id += 1;
                id
            };
            let hints = hints
                .iter()
                .map(|(k, v)| {
                    let text = match &**v {
                        zbus::Variant::Str(s) => s.to_string(),
                        other => format!("{other:?}"),
                    };
                    (k.clone(), text)
                })
                .collect();
            record.lock().unwrap().notifications.push(Notification {
                id,
                app_name,
                replaces_id,
                app_icon,
                summary,
                body,
                actions,
                hints,
                expire_timeout,
            });
            if mode != Mode::Hung {
                conn.reply(&header, &id).await?;
            }
        }
        "CloseNotification" => {
            let id: u32 = msg.body().deserialize()?;
            record.lock().unwrap().closed.push(id);
            conn.reply(&header, &()).await?;
            // 3: closed by a call to CloseNotification.
            conn.emit_signal(
                None::<&str>,
                PATH,
                INTERFACE,
                "NotificationClosed",
                &(id, 3u32),
            )
            .await?;
        }
        other => {
            conn.reply_error(
                &header,
                "org.freedesktop.DBus.Error.UnknownMethod",
                &format!("no method {other}"),
            )
            .await?;
        }
    }
    Ok(())
}
