//! The text of commands and responses: quoting, mailbox names (modified UTF-7), and the
//! few response fields popsync reads (numbers after a word, APPENDUID's UID set).

use super::Error;

/// `text` without its first word `word` (any case), if that is its first word.
pub(super) fn strip_word<'t>(text: &'t str, word: &str) -> Option<&'t str> {
    let (first, rest) = text.split_once(' ').unwrap_or((text, ""));
    first.eq_ignore_ascii_case(word).then_some(rest)
}

pub(super) fn strip_word_bytes<'t>(text: &'t [u8], word: &str) -> Option<&'t [u8]> {
    let end = memchr::memchr(b' ', text).unwrap_or(text.len());
    text[..end]
        .eq_ignore_ascii_case(word.as_bytes())
        .then(|| text.get(end + 1..).unwrap_or_default())
}

/// The number after the word `key` in `text` (`UIDNEXT 42`).
pub(super) fn number_after(text: &str, key: &str) -> Option<u32> {
    let upper = text.to_ascii_uppercase();
    let mut from = 0;
    while let Some(p) = upper[from..].find(key) {
        let at = from + p;
        let before_ok = at == 0 || !upper.as_bytes()[at - 1].is_ascii_alphanumeric();
        let rest = &text[at + key.len()..];
        if before_ok && rest.starts_with(' ') {
            let digits: String = rest[1..].chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = digits.parse() {
                return Some(n);
            }
        }
        from = at + key.len();
    }
    None
}

/// The UIDs of an `APPENDUID validity uid-set` code, when there are `count` of them.
pub(super) fn appenduid(code: &str, count: usize) -> Option<(u32, Vec<u32>)> {
    let rest = strip_word(code, "APPENDUID")?;
    let (validity, set) = rest.split_once(' ')?;
    let validity = validity.parse().ok()?;
    let mut uids = Vec::new();
    for part in set.trim().split(',') {
        match part.split_once(':') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                let (lo, hi) = (a.min(b), a.max(b));
                if (hi - lo) as usize >= count {
                    return None;
                }
                uids.extend(lo..=hi);
            }
            None => uids.push(part.parse().ok()?),
        }
        if uids.len() > count {
            return None;
        }
    }
    (uids.len() == count).then_some((validity, uids))
}

/// A string as an IMAP quoted string; line breaks and NUL cannot be sent that way, nor
/// bytes outside ASCII.
pub(super) fn quoted(s: &str) -> Result<String, Error> {
    if s.bytes()
        .any(|b| matches!(b, b'\r' | b'\n' | 0) || !b.is_ascii())
    {
        return Err(Error::NoLoginMethod(
            "a user name or password with line breaks, NUL or non-ASCII characters cannot be \
             sent with LOGIN: use auth = \"plain\""
                .into(),
        ));
    }
    Ok(format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// A mailbox name as a command argument: modified UTF-7 (RFC 3501 section 5.1.3), quoted.
pub fn mailbox_arg(name: &str) -> String {
    let encoded = modified_utf7(name);
    format!("\"{}\"", encoded.replace('\\', "\\\\").replace('"', "\\\""))
}

/// RFC 3501's modified UTF-7: printable ASCII as is (`&` as `&-`), anything else as
/// `&` + modified base64 of its UTF-16 + `-`.
pub fn modified_utf7(name: &str) -> String {
    use base64::Engine as _;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::IMAP_MUTF7,
        base64::engine::general_purpose::NO_PAD,
    );
    let mut out = String::new();
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&engine.encode(bytes));
        out.push('-');
        pending.clear();
    };
    for ch in name.chars() {
        if (' '..='~').contains(&ch) {
            flush(&mut pending, &mut out);
            if ch == '&' {
                out.push_str("&-");
            } else {
                out.push(ch);
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(ch.encode_utf16(&mut units));
        }
    }
    flush(&mut pending, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_names_are_modified_utf7() {
        assert_eq!(modified_utf7("INBOX"), "INBOX");
        assert_eq!(modified_utf7("Tom & Jerry"), "Tom &- Jerry");
        // RFC 3501's own example.
        assert_eq!(
            modified_utf7("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(
            mailbox_arg("[Gmail]/All \"Mail\""),
            r#""[Gmail]/All \"Mail\"""#
        );
    }

    #[test]
    fn appenduid_sets_give_one_uid_per_message() {
        assert_eq!(appenduid("APPENDUID 7 42", 1), Some((7, vec![42])));
        assert_eq!(
            appenduid("APPENDUID 7 42:44", 3),
            Some((7, vec![42, 43, 44]))
        );
        assert_eq!(
            appenduid("APPENDUID 7 3,9:10", 3),
            Some((7, vec![3, 9, 10]))
        );
        assert_eq!(appenduid("APPENDUID 7 42:44", 2), None);
        assert_eq!(appenduid("APPENDUID 7 1:4294967295", 2), None);
        assert_eq!(appenduid("APPENDUID x 42", 1), None);
        assert_eq!(appenduid("TRYCREATE", 1), None);
    }

    #[test]
    fn numbers_are_found_after_their_word() {
        let s = "STATUS \"INBOX\" (UIDNEXT 5 UIDVALIDITY 1700000000)";
        assert_eq!(number_after(s, "UIDNEXT"), Some(5));
        assert_eq!(number_after(s, "UIDVALIDITY"), Some(1_700_000_000));
        assert_eq!(number_after("12 FETCH (UID 99 BODY[] {3}", "UID"), Some(99));
        assert_eq!(
            number_after("OK [UIDVALIDITY 3] ok", "[UIDVALIDITY"),
            Some(3)
        );
        assert_eq!(number_after("XUID 4", "UID"), None);
    }

    #[test]
    fn quoting_escapes_and_refuses_what_cannot_be_quoted() {
        assert_eq!(quoted(r#"a"b\c"#).unwrap(), r#""a\"b\\c""#);
        assert!(quoted("a\r\nb").is_err());
        assert!(quoted("pässword").is_err());
    }
}
