//! The words of notifications.

use crate::summary::MessageSummary;

/// Most "Sender — Subject" lines in a new-mail notification.
pub const MAX_LINES: usize = 5;
/// From this many new messages on (a first download, say), the notification is a summary
/// without lines.
pub const BIG_DOWNLOAD: u64 = 100;

/// Escapes text for the body markup notification servers apply.
pub fn escape_markup(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// "4.1 MB", "812 KB", "120 B" (decimal units, as mail clients show sizes).
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

/// 1234 -> "1,234".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// Summary and (escaped) body of a new-mail notification. `newest` holds the newest
/// messages, newest last; they are listed newest first.
pub fn new_mail_text(account: &str, count: u64, newest: &[MessageSummary]) -> (String, String) {
    if count >= BIG_DOWNLOAD {
        return (
            format!("{} messages downloaded — {account}", thousands(count)),
            String::new(),
        );
    }
    let summary = if count == 1 {
        format!("1 new message — {account}")
    } else {
        format!("{count} new messages — {account}")
    };
    let lines: Vec<String> = newest
        .iter()
        .rev()
        .take(MAX_LINES)
        .map(|m| escape_markup(&format!("{} — {}", m.from, m.subject)))
        .collect();
    let mut body = lines.join("\n");
    let more = count.saturating_sub(lines.len() as u64);
    if more > 0 && !lines.is_empty() {
        body.push_str(&format!("\nand {} more", thousands(more)));
    }
    (summary, body)
}

/// Summary and (escaped) body of the one notification that sums up the first polls after
/// the agent starts, when several accounts brought mail: `accounts` with their counts.
pub fn first_start_text(accounts: &[(String, u64)]) -> (String, String) {
    let total: u64 = accounts.iter().map(|(_, n)| n).sum();
    let summary = format!(
        "{} new message{} in {} accounts",
        thousands(total),
        if total == 1 { "" } else { "s" },
        accounts.len()
    );
    let lines: Vec<String> = accounts
        .iter()
        .map(|(name, n)| escape_markup(&format!("{name}: {} new", thousands(*n))))
        .collect();
    (summary, lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(from: &str, subject: &str) -> MessageSummary {
        MessageSummary {
            from: from.into(),
            subject: subject.into(),
        }
    }

    #[test]
    fn new_mail_lists_the_newest_first_escaped_then_how_many_more() {
        let newest = [m("A & B", "<b>bold</b>"), m("山田 太郎", "🎉 party")];
        let (summary, body) = new_mail_text("home", 3, &newest);
        assert_eq!(summary, "3 new messages — home");
        assert_eq!(
            body,
            "山田 太郎 — 🎉 party\nA &amp; B — &lt;b&gt;bold&lt;/b&gt;\nand 1 more"
        );
        let (summary, body) = new_mail_text("home", 1, &newest[..1]);
        assert_eq!(summary, "1 new message — home");
        assert_eq!(body, "A &amp; B — &lt;b&gt;bold&lt;/b&gt;");
    }

    #[test]
    fn a_big_download_is_one_summary() {
        let (summary, body) = new_mail_text("home", 1234, &[m("a", "b")]);
        assert_eq!(summary, "1,234 messages downloaded — home");
        assert_eq!(body, "");
    }

    #[test]
    fn the_first_start_is_summed_up_per_account() {
        let (summary, body) = first_start_text(&[
            ("home".into(), 1200),
            ("w<rk>".into(), 3),
            ("shop".into(), 1),
        ]);
        assert_eq!(summary, "1,204 new messages in 3 accounts");
        assert_eq!(body, "home: 1,200 new\nw&lt;rk&gt;: 3 new\nshop: 1 new");
    }

    #[test]
    fn numbers_get_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
