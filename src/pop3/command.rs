//! The commands the client sends.
//!
//! Encoding refuses arguments containing CR, LF or NUL, so no value (a user name from a
//! config file, a message number) can smuggle a second command onto the wire. The `Display`
//! form is what the transcript shows: secrets are replaced by `<redacted>`.

use std::fmt;

use super::response::MsgNum;
use super::secret::Secret;

#[derive(Clone)]
pub enum Command<'a> {
    Capa,
    Stls,
    User(&'a str),
    Pass(&'a Secret),
    Apop {
        name: &'a str,
        digest: String,
    },
    /// `AUTH mechanism [initial-response]`
    Auth {
        mechanism: &'a str,
        initial: Option<Secret>,
    },
    /// A line answering a SASL continuation (base64, or `*` to cancel).
    SaslResponse(Secret),
    Stat,
    List(Option<MsgNum>),
    Uidl(Option<MsgNum>),
    Retr(MsgNum),
    /// `TOP msg lines`: the headers and the first `lines` lines of the body.
    Top(MsgNum, u32),
    Dele(MsgNum),
    Rset,
    Noop,
    Quit,
}

/// An argument contained CR, LF or NUL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidArgument;

impl Command<'_> {
    /// The command's keyword, for error messages ("the server refused RETR").
    pub fn name(&self) -> &'static str {
        match self {
            Self::Capa => "CAPA",
            Self::Stls => "STLS",
            Self::User(_) => "USER",
            Self::Pass(_) => "PASS",
            Self::Apop { .. } => "APOP",
            Self::Auth { .. } => "AUTH",
            Self::SaslResponse(_) => "AUTH (response)",
            Self::Stat => "STAT",
            Self::List(_) => "LIST",
            Self::Uidl(_) => "UIDL",
            Self::Retr(_) => "RETR",
            Self::Top(..) => "TOP",
            Self::Dele(_) => "DELE",
            Self::Rset => "RSET",
            Self::Noop => "NOOP",
            Self::Quit => "QUIT",
        }
    }

    /// Whether a positive answer is followed by a multi-line body.
    pub fn is_multiline(&self) -> bool {
        matches!(
            self,
            Self::Capa | Self::List(None) | Self::Uidl(None) | Self::Retr(_) | Self::Top(..)
        )
    }

    /// Appends the command line, CRLF included, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), InvalidArgument> {
        let start = out.len();
        let arg = |out: &mut Vec<u8>, s: &[u8]| -> Result<(), InvalidArgument> {
            if s.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                return Err(InvalidArgument);
            }
            out.push(b' ');
            out.extend_from_slice(s);
            Ok(())
        };
        let result = (|| {
            match self {
                Self::SaslResponse(s) => {
                    // A bare line, not a command.
                    if s.expose().bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                        return Err(InvalidArgument);
                    }
                    out.extend_from_slice(s.expose().as_bytes());
                }
                _ => {
                    out.extend_from_slice(self.name().as_bytes());
                    match self {
                        Self::User(u) => arg(out, u.as_bytes())?,
                        Self::Pass(p) => arg(out, p.expose().as_bytes())?,
                        Self::Apop { name, digest } => {
                            arg(out, name.as_bytes())?;
                            arg(out, digest.as_bytes())?;
                        }
                        Self::Auth { mechanism, initial } => {
                            arg(out, mechanism.as_bytes())?;
                            if let Some(i) = initial {
                                arg(out, i.expose().as_bytes())?;
                            }
                        }
                        Self::List(Some(n))
                        | Self::Uidl(Some(n))
                        | Self::Retr(n)
                        | Self::Dele(n) => arg(out, n.to_string().as_bytes())?,
                        Self::Top(n, lines) => {
                            arg(out, n.to_string().as_bytes())?;
                            arg(out, lines.to_string().as_bytes())?;
                        }
                        _ => {}
                    }
                }
            }
            out.extend_from_slice(b"\r\n");
            Ok(())
        })();
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Length of the encoded line including CRLF.
    pub fn encoded_len(&self) -> usize {
        let mut v = Vec::new();
        let _ = self.encode(&mut v);
        v.len()
    }
}

impl fmt::Display for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(u) => write!(f, "USER {}", u.escape_debug()),
            Self::Pass(_) => f.write_str("PASS <redacted>"),
            Self::Apop { name, .. } => write!(f, "APOP {} <redacted>", name.escape_debug()),
            Self::Auth {
                mechanism,
                initial: Some(_),
            } => write!(f, "AUTH {} <redacted>", mechanism.escape_debug()),
            Self::Auth {
                mechanism,
                initial: None,
            } => write!(f, "AUTH {}", mechanism.escape_debug()),
            Self::SaslResponse(_) => f.write_str("<redacted>"),
            Self::List(Some(n)) => write!(f, "LIST {n}"),
            Self::Uidl(Some(n)) => write!(f, "UIDL {n}"),
            Self::Retr(n) => write!(f, "RETR {n}"),
            Self::Top(n, lines) => write!(f, "TOP {n} {lines}"),
            Self::Dele(n) => write!(f, "DELE {n}"),
            other => f.write_str(other.name()),
        }
    }
}

impl fmt::Debug for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(c: Command<'_>) -> String {
        let mut v = Vec::new();
        c.encode(&mut v).unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn commands_encode_with_crlf() {
        assert_eq!(line(Command::Retr(MsgNum(7))), "RETR 7\r\n");
        assert_eq!(line(Command::Top(MsgNum(7), 0)), "TOP 7 0\r\n");
        assert_eq!(line(Command::Uidl(None)), "UIDL\r\n");
        assert_eq!(line(Command::User("me")), "USER me\r\n");
        let s = Secret::new("hunter2");
        assert_eq!(line(Command::Pass(&s)), "PASS hunter2\r\n");
        assert_eq!(
            line(Command::SaslResponse(Secret::new("AGZvbwBiYXI="))),
            "AGZvbwBiYXI=\r\n"
        );
    }

    #[test]
    fn arguments_with_line_breaks_or_nul_are_refused() {
        let mut v = b"kept".to_vec();
        assert_eq!(
            Command::User("me\r\nDELE 1").encode(&mut v),
            Err(InvalidArgument)
        );
        assert_eq!(v, b"kept", "nothing half-written");
        let s = Secret::new("a\0b");
        assert_eq!(Command::Pass(&s).encode(&mut v), Err(InvalidArgument));
        assert_eq!(
            Command::SaslResponse(Secret::new("x\ny")).encode(&mut v),
            Err(InvalidArgument)
        );
    }

    #[test]
    fn secrets_never_show_in_display_or_debug() {
        let s = Secret::new("hunter2");
        let cmds = [
            Command::Pass(&s),
            Command::Auth {
                mechanism: "PLAIN",
                initial: Some(Secret::new("hunter2")),
            },
            Command::SaslResponse(Secret::new("hunter2")),
            Command::Apop {
                name: "me",
                digest: "hunter2".into(),
            },
        ];
        for c in cmds {
            assert!(!format!("{c} {c:?}").contains("hunter2"), "{c}");
        }
    }
}
