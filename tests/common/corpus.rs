//! A deterministic corpus of realistic messages: the same (seed, index) always gives the same
//! bytes. The mix covers what breaks mail software: 8-bit and invalid UTF-8 bodies, RFC 2047
//! headers (Japanese, emoji), lines starting with `.`, `..` and `From `, CRLF-stored
//! messages, messages without a final newline, very long lines, empty bodies, base64
//! attachments and, on request, multi-megabyte ones.

/// splitmix64: small, fast, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "the", "of", "and", "mail", "server", "message", "fetch", "deliver", "queue", "report",
    "meeting", "agenda", "invoice", "budget", "review", "draft", "release", "notes", "please",
    "thanks", "regards", "attached", "update", "status", "question", "answer", "tomorrow",
];
const SPECIAL_LINES: &[&str] = &[
    ".",
    "..",
    "...",
    ".hidden line starting with a dot",
    "From the desk of the release manager",
    "From ",
    ">From an earlier message",
    ">>From twice quoted",
    " .space then dot",
];
const SUBJECTS: &[&str] = &[
    "Quarterly report",
    "=?UTF-8?B?5pel5pys6Kqe44Gu5Lu25ZCN?=",
    "=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_Z=C3=BCrich?=",
    "=?UTF-8?B?8J+OiSBQYXJ0eSB0aW1lIPCfmoA=?=",
    "Re: [list] meeting notes & <agenda>",
    "=?ISO-8859-1?Q?Caf=E9?= menu",
];
const FROMS: &[&str] = &[
    "Alice Example <alice@example.org>",
    "\"Dave O'Neil\" <dave@example.co.uk>",
    "=?UTF-8?B?5bGx55SwIOWkqumDjg==?= <taro@example.jp>",
    "Build Bot <noreply@ci.example.com>",
];

fn words(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| *rng.pick(WORDS))
        .collect::<Vec<_>>()
        .join(" ")
}

fn base64(data: &[u8]) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(data.len() * 4 / 3 + data.len() / 57 + 4);
    for (i, chunk) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push(b'\n');
        }
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63]);
        out.push(T[(n >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63]
        } else {
            b'='
        });
    }
    out.push(b'\n');
    out
}

/// How big the messages of a corpus are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizes {
    /// Mostly a few KB, some tens of KB.
    Mixed,
    /// 2-4 KB.
    Small,
    /// About this many bytes each (an attachment makes up the bulk).
    Fixed(usize),
}

/// Message `i` of the corpus `seed`. LF line endings unless the message is one of the
/// CRLF-stored ones.
pub fn message(seed: u64, i: usize, sizes: Sizes) -> Vec<u8> {
    let mut rng = Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
    let mut m = Vec::new();
    let date_secs = 1_700_000_000 + i as u64 * 37;
    m.extend_from_slice(format!("Return-Path: <sender{}@example.net>\n", rng.below(50)).as_bytes());
    m.extend_from_slice(
        format!(
            "Received: from mx{}.example.net (mx.example.net [192.0.2.{}])\n\tby mail.example (Postfix) with ESMTPS id {:08X}; {}\n",
            rng.below(4),
            rng.below(250) + 1,
            rng.next() as u32,
            date_secs
        )
        .as_bytes(),
    );
    m.extend_from_slice(format!("From: {}\n", rng.pick(FROMS)).as_bytes());
    m.extend_from_slice(b"To: user@example.net\n");
    m.extend_from_slice(format!("Subject: {} #{i}\n", rng.pick(SUBJECTS)).as_bytes());
    m.extend_from_slice(format!("Message-ID: <corpus.{seed}.{i}@example.net>\n").as_bytes());
    m.extend_from_slice(b"MIME-Version: 1.0\n");

    let target = match sizes {
        Sizes::Small => 2048 + rng.below(2048) as usize,
        Sizes::Fixed(n) => n,
        Sizes::Mixed => {
            if rng.chance(10) {
                20_000 + rng.below(60_000) as usize
            } else {
                1_500 + rng.below(9_000) as usize
            }
        }
    };
    let kind = if matches!(sizes, Sizes::Fixed(n) if n > 100_000) {
        5
    } else {
        rng.below(6)
    };
    match kind {
        // plain ASCII with the lines that break naive dot-stuffing and mbox quoting
        0 | 1 => {
            m.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\n\n");
            while m.len() < target {
                let line = if rng.chance(15) {
                    rng.pick(SPECIAL_LINES).to_string()
                } else {
                    let n = 4 + rng.below(10) as usize;
                    words(&mut rng, n)
                };
                m.extend_from_slice(line.as_bytes());
                m.push(b'\n');
            }
        }
        // UTF-8, 8bit
        2 => {
            m.extend_from_slice(
                b"Content-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n\n",
            );
            while m.len() < target {
                m.extend_from_slice(
                    format!(
                        "{} 日本語のテキストです。 🎉 Grüße {}\n",
                        words(&mut rng, 5),
                        rng.pick(SPECIAL_LINES)
                    )
                    .as_bytes(),
                );
            }
        }
        // bytes that are not UTF-8 at all
        3 => {
            m.extend_from_slice(b"Content-Type: text/plain; charset=unknown-8bit\n\n");
            while m.len() < target {
                m.extend_from_slice(words(&mut rng, 6).as_bytes());
                m.extend_from_slice(b" \xff\xfe\xc3\x28 \xe9t\xe9 \x80\x81\n");
                if rng.chance(20) {
                    m.extend_from_slice(b".\xff dot then invalid\n");
                }
            }
        }
        // one very long line (HTML mail often has these)
        4 => {
            m.extend_from_slice(b"Content-Type: text/html; charset=UTF-8\n\n<html><body>");
            while m.len() < target {
                m.extend_from_slice(format!("<p>{}</p>", words(&mut rng, 8)).as_bytes());
            }
            m.extend_from_slice(b"</body></html>\n");
        }
        // multipart with a base64 attachment
        _ => {
            let boundary = format!("=_mix_{:016x}", rng.next());
            m.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\n\n").as_bytes(),
            );
            m.extend_from_slice(
                format!(
                    "--{boundary}\nContent-Type: text/plain\n\nSee attached.\n.\n..\nFrom me\n"
                )
                .as_bytes(),
            );
            m.extend_from_slice(
                format!("--{boundary}\nContent-Type: application/octet-stream; name=\"data.bin\"\nContent-Transfer-Encoding: base64\n\n").as_bytes(),
            );
            let raw_len = target.saturating_sub(m.len() + 100) * 3 / 4;
            let raw: Vec<u8> = (0..raw_len).map(|_| rng.next() as u8).collect();
            m.extend_from_slice(&base64(&raw));
            m.extend_from_slice(format!("--{boundary}--\n").as_bytes());
        }
    }
    // Line-ending variants, decided independently of the content.
    let mut variant = Rng::new(seed ^ 0xE0F ^ (i as u64).wrapping_mul(7919));
    let v = variant.below(100);
    if v < 10 {
        m = crlf(&m);
    } else if v < 13 {
        while m.last() == Some(&b'\n') {
            m.pop();
        }
    }
    m
}

fn crlf(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() + m.len() / 40);
    for &b in m {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// A varied corpus of `n` messages, with the special cases always present: an empty body,
/// headers only, a message without final newline, a CRLF-stored one with dot lines, and
/// (if `big` is set) one message with a multi-megabyte attachment.
pub fn varied(seed: u64, n: usize, big: Option<usize>) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..n).map(|i| message(seed, i, Sizes::Mixed)).collect();
    let fixed: Vec<Vec<u8>> = vec![
        b"Subject: empty body\nFrom: a@example.net\n\n".to_vec(),
        b"Subject: headers only\nFrom: a@example.net\n".to_vec(),
        b"Subject: no final newline\n\nlast line has no end".to_vec(),
        b"Subject: crlf\r\n\r\n.\r\n..\r\nFrom x\r\n.end\r\n".to_vec(),
        b"Subject: lone dot last\n\nbody\n.".to_vec(),
    ];
    for (k, m) in fixed.into_iter().enumerate() {
        if k < out.len() {
            out[k] = m;
        }
    }
    if let (Some(size), Some(last)) = (big, out.last_mut()) {
        *last = message(seed, n, Sizes::Fixed(size));
    }
    out
}

/// What popsync writes for a message the server stored as `original`: CRLF becomes LF, and
/// POP3 cannot transmit a missing final newline, so one is added.
pub fn as_delivered(original: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(original.len() + 1);
    let mut i = 0;
    while i < original.len() {
        if original[i] == b'\r' && original.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(original[i]);
        i += 1;
    }
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out
}

/// The size POP3 LIST reports: every bare LF counted as CRLF.
pub fn wire_size(m: &[u8]) -> usize {
    let lf = m.iter().filter(|&&b| b == b'\n').count();
    let crlf = m.windows(2).filter(|w| w == b"\r\n").count();
    m.len() + lf - crlf
}
