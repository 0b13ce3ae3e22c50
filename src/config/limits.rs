//! The keys that say what happens to messages on the server, and which are too big.

use super::{Oversize, Retention, parse_duration};
use crate::keys::{Checker, Layered, keys};

keys! {
    /// Retention and size rules.
    pub struct LimitKeys {
        /// What happens to messages on the server once stored: "keep", "delete", or a
        /// duration after which they are deleted ("14d").
        retention: "retention" { default: "\"keep\"", example: "\"14d\"" },
        /// Messages larger than this (by the server's word) are not downloaded.
        max_size: "max-size" { default: "", example: "\"20MB\"" },
        /// What happens to a message over max-size: "skip" (left on the server) or
        /// "delete" (deleted without being downloaded).
        oversize: "oversize" { default: "\"skip\"", example: "\"delete\"" },
        /// Messages larger than this are delivered as their headers and a note; the whole
        /// message stays on the server.
        headers_only_over: "headers-only-over" { default: "", example: "\"5MB\"" },
        /// How messages are told apart: "uidl" (the server's unique-ids) or "headers"
        /// (each one's header block and size, asked for at every poll: for a server without
        /// UIDL; the mail then stays on the server).
        identify_by: "identify-by" { default: "\"uidl\"", example: "\"headers\"" },
    }
}

/// What is deleted from the server, and what is too big to download.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub retention: Retention,
    /// Messages larger than this (by the server's LIST size) are not downloaded.
    pub max_size: Option<u64>,
    /// What happens to a message over `max_size`.
    pub oversize: Oversize,
    /// Messages larger than this are delivered as their headers and a note.
    pub headers_only_over: Option<u64>,
    /// Messages are told apart by their header blocks and sizes, not by UIDL
    /// (`identify-by = "headers"`).
    pub identify_by_headers: bool,
}

pub fn read(c: &mut Checker<'_>, layers: &Layered<'_>) -> Limits {
    let keys = LimitKeys::take(layers);
    let retention = match keys.retention.string(c) {
        None => Retention::Keep,
        Some(("keep", _)) => Retention::Keep,
        Some(("delete", _)) => Retention::Delete,
        Some((other, at)) => match parse_duration(other) {
            Ok(d) => Retention::After(d),
            Err(e) => {
                c.problem(
                    Some(at),
                    Some("retention"),
                    format!("must be \"keep\", \"delete\" or a duration such as \"14d\": {e}"),
                );
                Retention::Keep
            }
        },
    };
    let max_size = keys.max_size.size(c);
    let headers_only_over = keys.headers_only_over.size(c);
    let oversize = keys
        .oversize
        .one_of(c, &[("skip", Oversize::Skip), ("delete", Oversize::Delete)])
        .unwrap_or(Oversize::Skip);
    if oversize == Oversize::Delete && max_size.is_none() {
        c.problem(
            keys.oversize.at(),
            Some("oversize"),
            "\"delete\" needs `max-size` to say what is too big",
        );
    }
    let identify_by_headers = keys
        .identify_by
        .one_of(c, &[("uidl", false), ("headers", true)])
        .unwrap_or(false);
    if identify_by_headers {
        // Told apart by content alone, a message is never deleted on its strength.
        if retention != Retention::Keep {
            c.problem(
                keys.retention.at(),
                Some("retention"),
                "identify-by = \"headers\" leaves mail on the server: set retention = \"keep\"",
            );
        }
        if oversize == Oversize::Delete {
            c.problem(
                keys.oversize.at(),
                Some("oversize"),
                "identify-by = \"headers\" leaves mail on the server: set oversize = \"skip\"",
            );
        }
    }
    Limits {
        retention,
        max_size,
        oversize,
        headers_only_over,
        identify_by_headers,
    }
}
