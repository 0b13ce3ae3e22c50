//! Where log lines go and how they look.
//!
//! Everything popsync does for one account runs inside a span `account` with the field
//! `name` (see `poll::fetch_account`); every line logged inside it starts with the account's
//! name, `home: connecting to ...`, so nothing has to write the name into its message. The
//! line is `[TIME ]LEVEL [TARGET: ][ACCOUNT: ]MESSAGE` on a terminal or in a file (the
//! time for the agent only, the target at `-vvv`), and `<PRIORITY>[ACCOUNT: ]MESSAGE` for
//! the systemd journal.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use super::progress;

/// The name of the span an account's work runs in, and of its field.
const ACCOUNT_SPAN: &str = "account";
const ACCOUNT_FIELD: &str = "name";

/// Sets up logging: `-q` errors only, `-v` info, `-vv` debug, `-vvv` trace with targets,
/// else `default`; `RUST_LOG` overrides all of it. `timestamps` for the agent on a terminal.
pub fn init(verbose: u8, quiet: bool, default: &str, timestamps: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => default,
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("popsync={level}")));
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let format = LineFormat {
        journal,
        timestamps: timestamps && !journal,
        target: verbose >= 3 && !journal,
    };
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(progress::LogWriter)
        .with_ansi(!journal && progress::stderr_is_terminal())
        .event_format(format);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(AccountNames)
        .with(lines)
        .try_init();
}

/// The account a span is about, kept with the span for the line format.
struct AccountName(String);

/// Notes the account name of each `account` span.
struct AccountNames;

impl<S> tracing_subscriber::Layer<S> for AccountNames
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != ACCOUNT_SPAN {
            return;
        }
        let mut visitor = NameVisitor(None);
        attrs.record(&mut visitor);
        if let (Some(name), Some(span)) = (visitor.0, ctx.span(id)) {
            span.extensions_mut().insert(AccountName(name));
        }
    }
}

struct NameVisitor(Option<String>);

impl Visit for NameVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == ACCOUNT_FIELD {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == ACCOUNT_FIELD {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// One log line.
struct LineFormat {
    /// `<PRIORITY>` in front, for the systemd journal; no time, no colours.
    journal: bool,
    timestamps: bool,
    target: bool,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let level = *meta.level();
        if self.journal {
            let priority = match level {
                Level::ERROR => 3,
                Level::WARN => 4,
                Level::INFO => 6,
                Level::DEBUG | Level::TRACE => 7,
            };
            write!(writer, "<{priority}>")?;
        } else {
            let ansi = writer.has_ansi_escapes();
            let (dim, reset) = if ansi {
                ("\x1b[2m", "\x1b[0m")
            } else {
                ("", "")
            };
            if self.timestamps {
                write!(
                    writer,
                    "{dim}{}{reset} ",
                    chrono::Local::now().format("%Y-%m-%d %H:%M:%S")
                )?;
            }
            let (text, colour) = match level {
                Level::TRACE => ("TRACE", "35"),
                Level::DEBUG => ("DEBUG", "34"),
                Level::INFO => (" INFO", "32"),
                Level::WARN => (" WARN", "33"),
                Level::ERROR => ("ERROR", "31"),
            };
            if ansi {
                write!(writer, "\x1b[{colour}m{text}{reset} ")?;
            } else {
                write!(writer, "{text} ")?;
            }
            if self.target {
                write!(writer, "{dim}{}{reset}{dim}:{reset} ", meta.target())?;
            }
        }
        if let Some(scope) = ctx.event_scope() {
            let mut names = String::new();
            for span in scope.from_root() {
                if let Some(AccountName(name)) = span.extensions().get::<AccountName>() {
                    let _ = write!(names, "{name}: ");
                }
            }
            writer.write_str(&names)?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
